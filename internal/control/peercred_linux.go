//go:build linux

package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"go.uber.org/zap"
)

// ownerListener admits only connections from the daemon's own user: the
// kernel records the credentials of the process that connected a unix socket
// (SO_PEERCRED), so this holds even if the socket's 0600 mode, or its
// folder's, is loosened by mistake. Root is admitted too: it can read every
// file the daemon reads, so refusing it would protect nothing.
type ownerListener struct {
	net.Listener
	uid int
	log *zap.Logger
}

func ownerOnly(ln net.Listener, log *zap.Logger) net.Listener {
	return &ownerListener{Listener: ln, uid: os.Geteuid(), log: log}
}

// Accept returns the next admitted connection; refused ones are closed
// before a byte is read, and logged.
func (l *ownerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cred, err := peerCred(c)
		if err == nil && (int(cred.Uid) == l.uid || cred.Uid == 0) {
			return c, nil
		}
		if err != nil {
			l.log.Warn("control connection refused: its user could not be read", zap.Error(err))
		} else {
			l.log.Warn("control connection refused: only the daemon's own user may use the control socket",
				zap.Uint32("uid", cred.Uid), zap.Int32("pid", cred.Pid), zap.Int("daemon uid", l.uid))
		}
		_ = c.Close()
	}
}

// peerCred reads the credentials the kernel recorded for the connecting process.
func peerCred(c net.Conn) (*syscall.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("control connection is %T, not a unix socket", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("reading peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("reading peer credentials: %w", err)
	}
	if credErr != nil {
		return nil, fmt.Errorf("reading peer credentials: %w", credErr)
	}
	if cred == nil {
		return nil, errors.New("reading peer credentials: none returned")
	}
	return cred, nil
}
