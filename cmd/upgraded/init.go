package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/coordination/p2p"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/sidecar/binstore"
	"github.com/upgraded/upgraded/sidecar/cluster"
)

func initCmd() *cobra.Command {
	var (
		dir, clusterDir, runner, serviceBin, ctlBin, unit string
		dockerSocket, container                           string
		listen, bootstrap, trust                          []string
		force                                             bool
	)
	c := &cobra.Command{
		Use:   "init",
		Short: "Create a config folder: identity, configuration, and the installed cluster binaries",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := needConfig(dir); err != nil {
				return err
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			if _, err := os.Stat(filepath.Join(abs, config.FileName)); err == nil && !force {
				return fmt.Errorf("%s already exists (use --force to overwrite it; the identity is kept)", filepath.Join(abs, config.FileName))
			}
			cfg := config.Default(abs)
			if cfg.ClusterConfig, err = filepath.Abs(clusterDir); err != nil || clusterDir == "" {
				return errors.New("--cluster-config CLUSTER_DIR is required")
			}
			if len(listen) > 0 {
				cfg.Listen = listen
			}
			cfg.Bootstrap, cfg.Trust, cfg.Runner.Type = bootstrap, trust, runner
			if unit != "" {
				cfg.Runner.Unit = unit
			}
			if err := dockerFlags(cmd, cfg, dockerSocket, container); err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			if _, err := cluster.LoadServiceConfig(cfg.ClusterConfig); err != nil {
				return fmt.Errorf("reading the cluster config folder: %w", err)
			}
			// The binaries are found before anything is written, so that a
			// missing one leaves no half-made config folder behind.
			serviceBin, ctlBin, err = findBinaries(cfg, serviceBin, ctlBin)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(abs, 0o700); err != nil {
				return fmt.Errorf("creating config folder: %w", err)
			}
			version := ""
			if serviceBin != "" {
				if version, err = importBinaries(cmd, cfg, serviceBin, ctlBin); err != nil {
					return err
				}
			}
			key, err := p2p.LoadOrCreateIdentity(cfg.IdentityFile())
			if err != nil {
				return fmt.Errorf("creating the daemon identity: %w", err)
			}
			if err := cfg.Save(); err != nil {
				return err
			}
			id, err := peerIDOf(key)
			if err != nil {
				return err
			}
			if version == "" {
				fmt.Fprintf(cmd.OutOrStdout(), "initialised %s: daemon %s, peer in container %s (its binaries come from its image)\n",
					abs, id, cfg.Runner.Docker.Container)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "initialised %s: daemon %s, cluster peer binaries %s\n", abs, id, version)
			return nil
		},
	}
	configFlag(c, &dir)
	f := c.Flags()
	f.StringVar(&clusterDir, "cluster-config", "", "the IPFS Cluster peer's config folder (service.json, identity.json)")
	f.StringSliceVar(&listen, "listen", nil, "multiaddrs of this daemon (default /ip4/0.0.0.0/tcp/9099)")
	f.StringSliceVar(&bootstrap, "bootstrap", nil, "other daemons to join, comma-separated full /p2p multiaddrs (none: start a new group)")
	f.StringSliceVar(&trust, "trust", nil, "peer IDs of operator keys whose announcements are accepted, comma-separated")
	f.StringVar(&runner, "runner", config.RunnerExec, "how the peer runs: exec (child process), systemd, or docker (a container beside upgraded's)")
	f.StringVar(&unit, "unit", "", "systemd unit of the peer (systemd runner; default ipfs-cluster.service)")
	f.StringVar(&dockerSocket, "docker-socket", "", "Docker Engine API socket as the daemon sees it (docker runner; default unix:///var/run/docker.sock)")
	f.StringVar(&container, "container", "", "name of the peer's container (docker runner; default ipfs-cluster)")
	f.StringVar(&serviceBin, "service-bin", "", "the installed ipfs-cluster-service (default: from $PATH; not needed with the docker runner)")
	f.StringVar(&ctlBin, "ctl-bin", "", "the installed ipfs-cluster-ctl (default: from $PATH, optional)")
	f.BoolVar(&force, "force", false, "overwrite an existing configuration")
	return c
}

// dockerFlags puts --docker-socket and --container into cfg; they belong to
// the docker runner only.
func dockerFlags(cmd *cobra.Command, cfg *config.Config, socket, container string) error {
	for _, name := range []string{"docker-socket", "container"} {
		if cmd.Flags().Changed(name) && cfg.Runner.Type != config.RunnerDocker {
			return fmt.Errorf("--%s is for --runner docker, not %s", name, cfg.Runner.Type)
		}
	}
	if socket != "" {
		cfg.Runner.Docker.Socket = socket
	}
	if container != "" {
		cfg.Runner.Docker.Container = container
	}
	return nil
}

// findBinaries resolves the installed cluster binaries to import. With the
// docker runner the peer's binaries live in its image: unless --service-bin
// names one, none is looked for on this host, since a binary that happens to
// be in $PATH may be another version than the container's; the daemon keeps
// the running image's own binaries at the first plan.
func findBinaries(cfg *config.Config, serviceBin, ctlBin string) (string, string, error) {
	if cfg.Runner.Type == config.RunnerDocker {
		if serviceBin == "" && ctlBin != "" {
			return "", "", errors.New("--ctl-bin needs --service-bin (with the docker runner neither is needed)")
		}
		if serviceBin == "" {
			return "", "", nil
		}
	} else if serviceBin == "" {
		p, err := exec.LookPath("ipfs-cluster-service")
		if err != nil {
			return "", "", fmt.Errorf("--service-bin PATH is required with the %s runner: no ipfs-cluster-service in $PATH", cfg.Runner.Type)
		}
		serviceBin = p
	}
	if ctlBin == "" {
		if p, err := exec.LookPath("ipfs-cluster-ctl"); err == nil {
			ctlBin = p
		}
	}
	for flag, p := range map[string]string{"--service-bin": serviceBin, "--ctl-bin": ctlBin} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("%s: %w", flag, err)
		}
	}
	return serviceBin, ctlBin, nil
}

// importBinaries copies the installed cluster binaries into upgraded's own
// binary store, so that every later switch is a link change inside it.
func importBinaries(cmd *cobra.Command, cfg *config.Config, serviceBin, ctlBin string) (string, error) {
	version, err := cluster.Binary{Path: serviceBin}.Version(cmd.Context())
	if err != nil {
		return "", fmt.Errorf("asking %s its version: %w", serviceBin, err)
	}
	bins, err := binstore.Open(cfg.BinDir())
	if err != nil {
		return "", err
	}
	if err := bins.Import(version, serviceBin, ctlBin); err != nil {
		return "", fmt.Errorf("importing the installed binaries: %w", err)
	}
	if cur, err := bins.Current(); err != nil || cur == "" {
		if err := bins.Activate(version); err != nil {
			return "", fmt.Errorf("making %s the current version: %w", version, err)
		}
	}
	return version, nil
}
