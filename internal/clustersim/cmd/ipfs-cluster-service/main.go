// Command ipfs-cluster-service is the simulator's look-alike of IPFS
// Cluster's peer daemon; see package clustersim.
package main

import (
	"os"

	"github.com/upgraded/upgraded/internal/clustersim"
)

func main() {
	os.Exit(clustersim.ServiceMain(os.Args[1:], clustersim.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}))
}
