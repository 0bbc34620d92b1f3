package cluster

import "testing"

// oldStateHelp and oldDaemonHelp are made up in the form of a 0.x raft-era
// release that still had `state upgrade` and a working `daemon --upgrade`.
const oldStateHelp = `NAME:
   ipfs-cluster-service state - Manage the peer's consensus state (pinset)

USAGE:
   ipfs-cluster-service state command [command options] [arguments...]

COMMANDS:
     upgrade  upgrade the IPFS Cluster state to the current version
     export   save the state to a JSON file
     import   load the state from a file produced by 'export'
     cleanup  cleanup persistent consensus state

OPTIONS:
   --help, -h  show help
`

const oldDaemonHelp = `NAME:
   ipfs-cluster-service daemon - run the IPFS Cluster peer (default)

USAGE:
   ipfs-cluster-service daemon [command options] [arguments...]

OPTIONS:
   --upgrade, -u                run necessary state migrations before starting
   --bootstrap value, -j value  join a cluster providing an existing peers multiaddress(es)
`

func TestDetectCapabilities(t *testing.T) {
	current := Capabilities{StateCleanup: true, StateExport: true, StateImport: true, Bootstrap: true, CRDTCommands: true}
	tests := []struct {
		name              string
		stateHelp, daemon string
		want              Capabilities
	}{
		{"0.14.5", sampleText(t, "0.14.5-crdt", "service-help-state.txt"), sampleText(t, "0.14.5-crdt", "service-help-daemon.txt"),
			Capabilities{StateCleanup: true, StateExport: true, StateImport: true, Bootstrap: true}},
		{"1.0.8", sampleText(t, "1.0.8-raft", "service-help-state.txt"), sampleText(t, "1.0.8-raft", "service-help-daemon.txt"), current},
		{"1.1.6", sampleText(t, "1.1.6-crdt", "service-help-state.txt"), sampleText(t, "1.1.6-crdt", "service-help-daemon.txt"), current},
		{"made-up old release", oldStateHelp, oldDaemonHelp,
			Capabilities{StateUpgrade: true, DaemonUpgrade: true, StateCleanup: true, StateExport: true, StateImport: true, Bootstrap: true}},
		{"no state or daemon command", "", "", Capabilities{}},
		{"upgrade flag only deprecated", "", "OPTIONS:\n   --upgrade, -u  does nothing (deprecated)\n", Capabilities{}},
		{"flags named alike are not the flag", "", "OPTIONS:\n   --upgrade-later  run migrations later\n   --bootstrapped  x\n", Capabilities{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := detectCapabilities(tt.stateHelp, tt.daemon); got != tt.want {
				t.Fatalf("detectCapabilities = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHelpCommands(t *testing.T) {
	got := helpCommands(sampleText(t, "1.1.6-raft", "service-help.txt"))
	for _, name := range []string{"init", "daemon", "state", "version", "help", "h"} {
		if !got[name] {
			t.Errorf("command %q not found in %v", name, got)
		}
	}
	// Words of other sections (DESCRIPTION, EXAMPLES, GLOBAL OPTIONS) are not commands.
	for _, name := range []string{"ipfs-cluster-service", "$", "--config", "Launch", "Initial"} {
		if got[name] {
			t.Errorf("%q taken for a command", name)
		}
	}
}

func sampleText(t *testing.T, release, name string) string {
	return string(readSample(t, release, name))
}
