//go:build !unix

package cluster

import "os/exec"

// killGroupOnCancel keeps exec's default on systems without process groups:
// only the process itself is killed on cancel.
func killGroupOnCancel(*exec.Cmd) {}
