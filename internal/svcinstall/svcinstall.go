// Package svcinstall installs upgraded as a systemd service through
// kardianos/service, writing the same hardened unit the .deb ships, and checks
// before anything runs that the systemd runner can drive the peer's unit.
package svcinstall

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/kardianos/service"

	"github.com/upgraded/upgraded/systemd"
)

// Paths the shipped unit is written for; Unit replaces them.
const (
	shippedConfigDir  = "/var/lib/upgraded"
	shippedClusterDir = "/var/lib/ipfs-cluster"
	shippedExecutable = "/usr/bin/upgraded"
	shippedUser       = "upgraded"
)

// Options say where the installed daemon finds its files and as whom it runs.
type Options struct {
	Name       string // unit name without .service; default "upgraded"
	ConfigDir  string // upgraded's config folder (absolute)
	ClusterDir string // the peer's config folder, the only other writable one
	Executable string // the upgraded binary (absolute)
	User       string // non-root user to run as; default "upgraded"
}

func (o *Options) normalise() error {
	if o.Name == "" {
		o.Name = "upgraded"
	}
	if o.User == "" {
		o.User = shippedUser
	}
	if o.User == "root" {
		return errors.New("the service must not run as root: give it its own user (the .deb creates \"upgraded\")")
	}
	for what, p := range map[string]string{"config folder": o.ConfigDir, "cluster config folder": o.ClusterDir,
		"executable": o.Executable} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("the %s must be an absolute path, got %q", what, p)
		}
		// systemd splits unit settings at whitespace and expands % and $.
		if strings.ContainsAny(p, " \t\n\"'\\%$") {
			return fmt.Errorf("the %s %q holds characters a unit file cannot carry", what, p)
		}
	}
	for what, s := range map[string]string{"service name": o.Name, "user": o.User} {
		if s == "" || strings.ContainsAny(s, " \t\n/\"'\\%$") {
			return fmt.Errorf("%s %q is not usable in a unit", what, s)
		}
	}
	return nil
}

// Unit renders the hardened unit for o: the shipped upgraded.service with its
// paths and user replaced, so both ways of installing give one unit.
func Unit(o Options) (string, error) {
	if err := o.normalise(); err != nil {
		return "", err
	}
	// Longest first: the executable's folder is not under the others, but
	// the config folder must be replaced before a shorter prefix could be.
	r := strings.NewReplacer(
		shippedExecutable, o.Executable,
		shippedClusterDir, o.ClusterDir,
		shippedConfigDir, o.ConfigDir,
		"User="+shippedUser+"\n", "User="+o.User+"\n",
	)
	return r.Replace(systemd.Upgraded()), nil
}

// Manager installs and drives the service.
type Manager struct {
	opts Options
	svc  service.Service
}

// noProgram satisfies kardianos' Interface: this process only manages the
// service; `upgraded daemon` is what runs inside it.
type noProgram struct{}

func (noProgram) Start(service.Service) error { return nil }
func (noProgram) Stop(service.Service) error  { return nil }

// New prepares a manager for the unit described by o.
func New(o Options) (*Manager, error) {
	unit, err := Unit(o)
	if err != nil {
		return nil, err
	}
	o.normalise() //nolint:errcheck // Unit already checked o
	cfg := &service.Config{
		Name:        o.Name,
		DisplayName: o.Name,
		Description: "upgraded: coordinated IPFS Cluster upgrades",
		Executable:  o.Executable,
		Arguments:   []string{"daemon", "--config", o.ConfigDir},
		UserName:    o.User,
		// The whole unit is ours: kardianos' template would run the daemon
		// as given but without the hardening.
		Option: service.KeyValue{"SystemdScript": unit},
	}
	if service.ChosenSystem() == nil || service.ChosenSystem().String() != "linux-systemd" {
		return nil, fmt.Errorf("this host's service manager is %v, not systemd: only systemd is supported", service.ChosenSystem())
	}
	svc, err := service.New(noProgram{}, cfg)
	if err != nil {
		return nil, fmt.Errorf("setting up the %s service: %w", o.Name, err)
	}
	return &Manager{opts: o, svc: svc}, nil
}

// UnitName is the systemd unit the manager installs.
func (m *Manager) UnitName() string { return m.opts.Name + ".service" }

// Install writes /etc/systemd/system/<name>.service and enables it.
func (m *Manager) Install() error {
	if err := m.svc.Install(); err != nil {
		return fmt.Errorf("installing %s: %w", m.UnitName(), err)
	}
	return nil
}

// Uninstall disables the unit and removes its file.
func (m *Manager) Uninstall() error {
	if err := m.svc.Uninstall(); err != nil {
		return fmt.Errorf("uninstalling %s: %w", m.UnitName(), err)
	}
	return nil
}

// Start starts the installed unit.
func (m *Manager) Start() error {
	if err := m.svc.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", m.UnitName(), err)
	}
	return nil
}

// Stop stops the installed unit.
func (m *Manager) Stop() error {
	if err := m.svc.Stop(); err != nil {
		return fmt.Errorf("stopping %s: %w", m.UnitName(), err)
	}
	return nil
}

// Status says running, stopped or not installed, in words.
func (m *Manager) Status() (string, error) {
	st, err := m.svc.Status()
	switch {
	case errors.Is(err, service.ErrNotInstalled):
		return "not installed", nil
	case err != nil:
		return "", fmt.Errorf("status of %s: %w", m.UnitName(), err)
	case st == service.StatusRunning:
		return "running", nil
	case st == service.StatusStopped:
		return "stopped", nil
	default:
		return "unknown", nil
	}
}
