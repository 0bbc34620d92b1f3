package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/svcinstall"
)

func serviceCmd() *cobra.Command {
	var (
		dir, clusterDir, user, name string
	)
	c := &cobra.Command{
		Use:   "service install|uninstall|start|stop|status|check",
		Short: "Install upgraded as a hardened systemd service, drive it, or check the peer's unit",
		Long: `install writes the same hardened unit the .deb ships (its own non-root user, read-only
system, only the config folder and the cluster peer's folder writable) for --config DIR
and enables it. check proves that the configured peer unit exists and that this user may
start and stop it (the polkit rule), without touching the running peer; upgraded.service
runs it before the daemon.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"install", "uninstall", "start", "stop", "status", "check"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needConfig(dir); err != nil {
				return err
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			if args[0] == "check" {
				return checkPeerUnit(cmd, abs)
			}
			m, err := serviceManager(abs, clusterDir, user, name)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch args[0] {
			case "install":
				if err := m.Install(); err != nil {
					return err
				}
				fmt.Fprintf(out, "installed and enabled %s (config %s)\n", m.UnitName(), abs)
			case "uninstall":
				if err := m.Uninstall(); err != nil {
					return err
				}
				fmt.Fprintf(out, "uninstalled %s\n", m.UnitName())
			case "start":
				return m.Start()
			case "stop":
				return m.Stop()
			case "status":
				st, err := m.Status()
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "%s: %s\n", m.UnitName(), st)
			default:
				return fmt.Errorf("unknown action %q: want install, uninstall, start, stop, status or check", args[0])
			}
			return nil
		},
	}
	configFlag(c, &dir)
	f := c.Flags()
	f.StringVar(&clusterDir, "cluster-config", "", "the cluster peer's folder the service may write (default: from upgraded.json)")
	f.StringVar(&user, "user", "upgraded", "the non-root user the service runs as")
	f.StringVar(&name, "name", "upgraded", "the unit's name, without .service")
	return c
}

// serviceManager describes the unit for the config folder dir; the cluster
// folder comes from the flag, else from upgraded.json.
func serviceManager(dir, clusterDir, user, name string) (*svcinstall.Manager, error) {
	if clusterDir == "" {
		cfg, err := config.Load(dir)
		if err != nil {
			return nil, fmt.Errorf("finding the cluster peer's folder (give --cluster-config or run `upgraded init` first): %w", err)
		}
		clusterDir = cfg.ClusterConfig
	}
	clusterDir, err := filepath.Abs(clusterDir)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this executable: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return nil, fmt.Errorf("finding this executable: %w", err)
	}
	return svcinstall.New(svcinstall.Options{Name: name, ConfigDir: dir, ClusterDir: clusterDir, Executable: exe, User: user})
}

func checkPeerUnit(cmd *cobra.Command, dir string) error {
	cfg, err := config.Load(dir)
	if err != nil {
		return err
	}
	if cfg.Runner.Type != config.RunnerSystemd {
		fmt.Fprintf(cmd.OutOrStdout(), "runner %s: no systemd unit to check\n", cfg.Runner.Type)
		return nil
	}
	if err := svcinstall.Check(cmd.Context(), svcinstall.CheckConfig{Unit: cfg.Runner.Unit}); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "unit %s exists and may be started and stopped by this user\n", cfg.Runner.Unit)
	return nil
}
