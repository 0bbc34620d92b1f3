package cluster

import (
	"context"
	"fmt"
	"strings"
)

// Capabilities is what an installed ipfs-cluster-service supports, as its
// own help texts say. Releases differ, so the driver asks instead of assuming.
type Capabilities struct {
	StateUpgrade  bool // `state upgrade` (old 0.x releases)
	DaemonUpgrade bool // `daemon --upgrade` that still migrates (not "deprecated/unused")
	StateCleanup  bool // `state cleanup`
	StateExport   bool // `state export`
	StateImport   bool // `state import`
	Bootstrap     bool // `daemon --bootstrap`
	CRDTCommands  bool // `state crdt ...` (1.x)
}

// Capabilities runs `--help`, `state --help` and `daemon --help` and reads
// what this binary supports.
func (b Binary) Capabilities(ctx context.Context) (Capabilities, error) {
	top, err := b.run(ctx, "--help")
	if err != nil {
		return Capabilities{}, fmt.Errorf("detecting capabilities: %w", err)
	}
	commands := helpCommands(top)
	var state, daemon string
	if commands["state"] {
		if state, err = b.run(ctx, "state", "--help"); err != nil {
			return Capabilities{}, fmt.Errorf("detecting state capabilities: %w", err)
		}
	}
	if commands["daemon"] {
		if daemon, err = b.run(ctx, "daemon", "--help"); err != nil {
			return Capabilities{}, fmt.Errorf("detecting daemon capabilities: %w", err)
		}
	}
	return detectCapabilities(state, daemon), nil
}

// detectCapabilities reads the help texts of `state` and `daemon` (empty
// when the binary has no such command).
func detectCapabilities(stateHelp, daemonHelp string) Capabilities {
	state := helpCommands(stateHelp)
	caps := Capabilities{
		StateUpgrade: state["upgrade"],
		StateCleanup: state["cleanup"],
		StateExport:  state["export"],
		StateImport:  state["import"],
		CRDTCommands: state["crdt"],
	}
	for _, line := range strings.Split(daemonHelp, "\n") {
		flags, desc := splitOption(line)
		switch {
		case hasFlag(flags, "--upgrade"):
			d := strings.ToLower(desc)
			caps.DaemonUpgrade = !strings.Contains(d, "deprecated") && !strings.Contains(d, "unused")
		case hasFlag(flags, "--bootstrap"):
			caps.Bootstrap = true
		}
	}
	return caps
}

// helpCommands lists the command names of a help text's COMMANDS section
// ("   export   save the state..." and "   help, h  Shows...").
func helpCommands(help string) map[string]bool {
	names := map[string]bool{}
	in := false
	for _, line := range strings.Split(help, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasSuffix(trimmed, ":") && strings.ToUpper(trimmed) == trimmed && trimmed != ":":
			in = trimmed == "COMMANDS:"
		case in && trimmed != "" && line != trimmed: // command lines are indented
			for _, alias := range strings.Split(strings.SplitN(trimmed, "  ", 2)[0], ",") {
				if name := strings.TrimSpace(alias); name != "" {
					names[name] = true
				}
			}
		}
	}
	return names
}

// splitOption splits an OPTIONS line ("   --upgrade, -u   run state ...")
// into its flags and its description; lines that are not options give "".
func splitOption(line string) (flags, desc string) {
	trimmed := strings.TrimSpace(line)
	if !strings.HasPrefix(trimmed, "-") {
		return "", ""
	}
	flags, desc, _ = strings.Cut(trimmed, "  ")
	return flags, strings.TrimSpace(desc)
}

// hasFlag tells whether flag is among the comma-separated flags of an
// option line, whatever value placeholder follows it ("--bootstrap value").
func hasFlag(flags, flag string) bool {
	for _, f := range strings.Split(flags, ",") {
		if fields := strings.Fields(f); len(fields) > 0 && fields[0] == flag {
			return true
		}
	}
	return false
}
