// Command ipfs-cluster-ctl is the simulator's look-alike of IPFS Cluster's
// CLI client; see package clustersim.
package main

import (
	"os"

	"github.com/upgraded/upgraded/internal/clustersim"
)

func main() {
	os.Exit(clustersim.CtlMain(os.Args[1:], clustersim.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}))
}
