package clustersim

// Help texts laid out like the releases' own (urfave/cli), since drivers
// parse them to detect what a binary supports. Placeholders in {{...}} are
// filled per release by renderHelp.

const (
	helpService = `NAME:
   ipfs-cluster-service - IPFS Cluster peer

USAGE:
   ipfs-cluster-service [global options] command [command options] [arguments...]

VERSION:
   {{VERSION}}

DESCRIPTION:
   
ipfs-cluster-service runs an IPFS Cluster peer.

A peer participates in the cluster consensus, follows a distributed log
of pinning and unpinning requests and manages pinning operations to a
configured IPFS daemon.

This peer also provides an API for cluster management, an IPFS Proxy API which
forwards requests to IPFS and a number of components for internal communication
using LibP2P. This is a simplified view of the components:

             +------------------+
             | ipfs-cluster-ctl |
             +---------+--------+
                       |
                       | HTTP(s)
ipfs-cluster-service   |                           HTTP
+----------+--------+--v--+----------------------+      +-------------+
| RPC      | Peer 1 | API | IPFS Connector/Proxy +------> IPFS daemon |
+----^-----+--------+-----+----------------------+      +-------------+
     | libp2p
     |
+----v-----+--------+-----+----------------------+      +-------------+
| RPC      | Peer 2 | API | IPFS Connector/Proxy +------> IPFS daemon |
+----^-----+--------+-----+----------------------+      +-------------+
     |
     |
+----v-----+--------+-----+----------------------+      +-------------+
| RPC      | Peer 3 | API | IPFS Connector/Proxy +------> IPFS daemon |
+----------+--------+-----+----------------------+      +-------------+


ipfs-cluster-service needs valid configuration and identity files to run.
These are independent from IPFS. The identity includes its own
libp2p key-pair. They can be initialized with "init" and their
default locations are ~/.ipfs-cluster/service.json
and ~/.ipfs-cluster/identity.json.

For feedback, bug reports or any additional information, visit
{{URL}}


EXAMPLES:

Initial configuration:

$ ipfs-cluster-service init

Launch a cluster:

$ ipfs-cluster-service daemon

Launch a peer and join existing cluster:

$ ipfs-cluster-service daemon --bootstrap /ip4/192.168.1.2/tcp/9096/p2p/QmPSoSaPXpyunaBwHs1rZBKYSqRV4bLRk32VGYLuvdrypL

Customize logs using --loglevel flag. To customize component-level
logging pass a comma-separated list of component-identifer:log-level
pair or without identifier for overall loglevel. Valid loglevels
are critical, error, warning, notice, info and debug.

$ ipfs-cluster-service --loglevel info,cluster:debug,pintracker:debug daemon


COMMANDS:
   init     Creates a configuration and generates an identity
   daemon   Runs the IPFS Cluster peer (default)
   state    {{STATEDESC}}
   version  Prints the ipfs-cluster version
   help, h  Shows a list of commands or help for one command

GLOBAL OPTIONS:
   --config FOLDER, -c FOLDER  path to the configuration and data FOLDER (default: "{{HOME}}") [$IPFS_CLUSTER_PATH]
   --force, -f                 forcefully proceed with some actions. i.e. overwriting configuration
   --debug, -d                 enable full debug logging (very verbose)
   --loglevel value, -l value  set overall and component-wise log levels [$IPFS_CLUSTER_LOG_LEVEL]
   --help, -h                  show help
   --version, -v               print the version
`
	helpDaemon = `NAME:
   ipfs-cluster-service daemon - Runs the IPFS Cluster peer (default)

USAGE:
   ipfs-cluster-service daemon [command options] [arguments...]

OPTIONS:
   --upgrade, -u                {{UPGRADEDESC}}
   --bootstrap value, -j value  join a cluster providing a comma-separated list of existing peers multiaddress(es)
   --stats                      enable stats collection
   --tracing                    enable tracing collection
   --no-trust                   do not trust bootstrap peers (only for "crdt" consensus)
   
`
	helpInit = `NAME:
   ipfs-cluster-service init - Creates a configuration and generates an identity

USAGE:
   ipfs-cluster-service init [command options] [http-source-url]

DESCRIPTION:
   
This command will initialize a new service.json configuration file and, if it
does already exist, generate a new identity.json for ipfs-cluster-service.

If the optional [source-url] is given, the generated configuration file
will refer to it. The source configuration will be fetched from its source
URL during the launch of the daemon. If not, a default standard configuration
file will be created.

In the latter case, a cluster secret will be generated as required
by ipfs-cluster-service. Alternatively, this secret can be manually
provided with --custom-secret (in which case it will be prompted), or
by setting the CLUSTER_SECRET environment variable.

The --consensus flag allows to select an alternative consensus components for
in the newly-generated configuration.

Note that the --force flag allows to overwrite an existing
configuration with default values. To generate a new identity, please
remove the identity.json file first and clean any Raft state.

By default, an empty peerstore file will be created too. Initial contents can
be provided with the --peers flag. Depending on the chosen consensus, the
"trusted_peers" list in the "crdt" configuration section and the
"init_peerset" list in the "raft" configuration section will be prefilled to
the peer IDs in the given multiaddresses.


OPTIONS:
{{INITFLAGS}}   --custom-secret, -s  prompt for the cluster secret (when no source specified)
   --peers value        comma-separated list of multiaddresses to init with (see help)
   --force, -f          overwrite configuration without prompting
   --randomports        configure random ports to listen on instead of defaults
   
`
	helpState = `NAME:
   ipfs-cluster-service state - {{STATEDESC}}

USAGE:
   ipfs-cluster-service state command [command options] [arguments...]

COMMANDS:
{{STATECMDS}}   export   save the state to a JSON file
   import   load the state from a file produced by 'export'
   cleanup  remove persistent data

OPTIONS:
   --help, -h  show help
   
`
	helpStateCleanup = `NAME:
   ipfs-cluster-service state cleanup - remove persistent data

USAGE:
   ipfs-cluster-service state cleanup [command options] [arguments...]

DESCRIPTION:
   
This command removes any persisted consensus data in this peer, including the
current pinset (state). The next start of the peer will be like {{FIRSTSTART}} start
to all effects. Peers may need to bootstrap and sync from scratch after this.


OPTIONS:
   --force, -f  skip confirmation prompt
   
`
	helpStateExport = `NAME:
   ipfs-cluster-service state export - save the state to a JSON file

USAGE:
   ipfs-cluster-service state export [command options] [arguments...]

DESCRIPTION:
   
This command dumps the current cluster pinset (state) as a JSON file. The
resulting file can be used to migrate, restore or backup a Cluster peer.
By default, the state will be printed to stdout.


OPTIONS:
   --file value, -f value  writes to an output file
   
`
	helpStateImport = `NAME:
   ipfs-cluster-service state import - load the state from a file produced by 'export'

USAGE:
   ipfs-cluster-service state import [command options] [arguments...]

DESCRIPTION:
   
This command reads in an exported pinset (state) file and replaces the
existing one. This can be used, for example, to restore a Cluster peer from a
backup.

If an argument is provided, it will be treated it as the path of the file
to import. If no argument is provided, stdin will be used.


OPTIONS:
   --force, -f                            skips confirmation prompt
   --replication-min value, --rmin value  Overwrite replication-factor-min for all pins on import (default: 0)
   --replication-max value, --rmax value  Overwrite replication-factor-max for all pins on import (default: 0)
   --allocations value, --allocs value    Overwrite allocations for all pins on import. Comma-separated list of peer IDs
   
`
	helpCtl = `NAME:
   ipfs-cluster-ctl - CLI for IPFS Cluster

USAGE:
   ipfs-cluster-ctl [global options] command [command options] [arguments...]

VERSION:
   {{VERSION}}

DESCRIPTION:
   
ipfs-cluster-ctl is a tool to manage IPFS Cluster nodes.

Use "ipfs-cluster-ctl help" to list all available commands and
"ipfs-cluster-ctl help <command>" to get usage information for a
specific one.

ipfs-cluster-ctl uses the IPFS Cluster API to perform requests and
display responses in a user-readable format. The location of the IPFS
Cluster server is assumed to be /ip4/127.0.0.1/tcp/9094, but can be configured
with the --host option. If several multiaddresses are specified 
(comma-separated), requests will be sent to the first one and fail-over 
over to the others. This also works for dns-based addresses which resolve
to multiple values.

To use the secure libp2p-http API endpoint, use "--host" with 
the full cluster libp2p listener address, including the "/p2p/<peerID>"
part, or a /dnsaddr that resolves to it. Provide the cluster secret with 
--secret as needed.

For feedback, bug reports or any additional information, visit
{{URL}}


COMMANDS:
   id       Retrieve peer information
   peers    List and manage IPFS Cluster peers
   add      Add a file or directory to ipfs and pin it in the cluster
   pin      Pin and unpin and list items in IPFS Cluster
   status   Retrieve the status of tracked items
   recover  Recover tracked items in error state
   version  Retrieve cluster version
   health   Cluster monitoring information
   ipfs     Manage IPFS daemon
   help, h  Shows a list of commands or help for one command

GLOBAL OPTIONS:
   --host value, -l value         API endpoint multiaddresses (comma-separated) (default: "/ip4/127.0.0.1/tcp/9094")
   --secret value                 cluster secret (32 byte pnet-key) as needed. Only when using the LibP2P endpoint
   --https, -s                    use https to connect to the API
   --no-check-certificate         do not verify server TLS certificate. only valid with --https flag
   --encoding value, --enc value  output format encoding [text, json] (default: "text")
   --timeout value, -t value      number of seconds to wait before timing out a request (default: 0)
   --debug, -d                    set debug log level
   --basic-auth value             <username>[:<password>] specify BasicAuth credentials for server that
requires authorization. implies --https, which you can disable with --force-http [$CLUSTER_CREDENTIALS]
   --force-http, -f  force HTTP. only valid when using BasicAuth
   --help, -h        show help
   --version, -v     print the version
`
)
