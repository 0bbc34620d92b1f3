package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/coordination/envelope"
	"github.com/upgraded/upgraded/coordination/p2p"
	"github.com/upgraded/upgraded/internal/control"
)

func peerIDOf(k crypto.PrivKey) (peer.ID, error) {
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		return "", fmt.Errorf("deriving peer ID: %w", err)
	}
	return id, nil
}

func idCmd() *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "id",
		Short: "Print the daemon's peer ID, then its multiaddrs",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(dir)
			if err != nil {
				return err
			}
			key, err := p2p.LoadOrCreateIdentity(cfg.IdentityFile())
			if err != nil {
				return err
			}
			id, err := peerIDOf(key)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, id)
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
			defer cancel()
			if st, err := control.NewClient(cfg.SocketPath()).Status(ctx); err == nil {
				for _, a := range st.Self.Addrs {
					fmt.Fprintln(out, a)
				}
				return nil
			}
			for _, a := range cfg.Listen { // not running: the configured addresses
				fmt.Fprintln(out, strings.TrimSuffix(a, "/")+"/p2p/"+id.String())
			}
			return nil
		},
	}
	configFlag(c, &dir)
	return c
}

func keygenCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "keygen",
		Short: "Create an operator signing key; prints its peer ID (give it to daemons with --trust)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out FILE is required")
			}
			id, err := envelope.GenerateKeyFile(out)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "where to write the key (mode 0600; never overwritten)")
	return c
}
