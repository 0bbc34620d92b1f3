package dockerrunner

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/upgraded/upgraded/internal/atomicfile"
)

// definition is what recreating a container takes: the creation body without
// its image (the operator's settings only, the image's defaults left out so
// another image brings its own), the image it ran, and extra arguments.
type definition struct {
	Spec      CreateSpec `json:"spec"`
	ImageID   string     `json:"image_id"`
	Ref       string     `json:"ref"`
	ExtraArgs []string   `json:"extra_args,omitempty"`
}

const (
	currentDef  = "current"
	previousDef = "previous"
	imagesFile  = "images"
)

func (r *Runner) loadDef(which string) (*definition, error) {
	b, err := os.ReadFile(r.path(which))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the %s definition of container %s: %w", which, r.cfg.Container, err)
	}
	var d definition
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("reading the %s definition of container %s: %w", which, r.cfg.Container, err)
	}
	return &d, nil
}

func (r *Runner) saveDef(which string, d *definition) error {
	if err := writeJSONAtomic(r.path(which), d); err != nil {
		return fmt.Errorf("saving the %s definition of container %s: %w", which, r.cfg.Container, err)
	}
	return nil
}

// PreviousImage is the image of the definition kept for rollback, "" when
// the container was never switched.
func (r *Runner) PreviousImage() (string, error) {
	d, err := r.loadDef(previousDef)
	if err != nil || d == nil {
		return "", err
	}
	return d.Ref, nil
}

func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b)
}

// definitionOf rebuilds the creation body of a container from its
// inspection: every setting of Config and HostConfig, minus what its image
// supplied by default, plus its anonymous volumes by name (a new container
// would get empty ones otherwise) and its networks.
func definitionOf(info *ContainerInfo, img *ImageInfo) (CreateSpec, error) {
	spec := CreateSpec{}
	for k, raw := range info.Config {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("reading the config of container %s: %w", info.Name, err)
		}
		spec[k] = v
	}
	delete(spec, "Image")
	delete(spec, "Hostname") // the engine's default (the ID, or the host's name) unless networks say otherwise
	env, _ := stringsOf(spec["Env"])
	if env = without(env, img.Config.Env); len(env) > 0 {
		spec["Env"] = env
	} else {
		delete(spec, "Env")
	}
	for key, def := range map[string][]string{"Cmd": img.Config.Cmd, "Entrypoint": img.Config.Entrypoint} {
		if v, err := stringsOf(spec[key]); err == nil && slices.Equal(v, def) {
			delete(spec, key)
		}
	}
	for key, def := range map[string]string{"WorkingDir": img.Config.WorkingDir, "User": img.Config.User} {
		if s, _ := spec[key].(string); s == def {
			delete(spec, key)
		}
	}
	if labels, ok := spec["Labels"].(map[string]any); ok {
		for k, v := range labels {
			if s, _ := v.(string); img.Config.Labels[k] == s && s != "" {
				delete(labels, k)
			}
		}
	}
	hc := map[string]any{}
	for k, raw := range info.HostConfig {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("reading the host config of container %s: %w", info.Name, err)
		}
		hc[k] = v
	}
	hc["Binds"] = withAnonymousVolumes(hc, info.Mounts)
	normalizeUlimits(hc)
	spec["HostConfig"] = hc
	if nc := networking(info, hc); nc != nil {
		spec["NetworkingConfig"] = nc
	}
	return spec, nil
}

func without(list, drop []string) []string {
	var out []string
	for _, s := range list {
		if !slices.Contains(drop, s) {
			out = append(out, s)
		}
	}
	return out
}

// withAnonymousVolumes returns the binds plus a named bind for every volume
// mounted at a destination no bind or mount of the definition covers.
func withAnonymousVolumes(hc map[string]any, mounts []MountPoint) []string {
	binds, _ := stringsOf(hc["Binds"])
	covered := map[string]bool{}
	for _, b := range binds {
		parts := strings.Split(b, ":")
		if len(parts) >= 2 {
			covered[parts[1]] = true
		}
	}
	if ms, ok := hc["Mounts"].([]any); ok {
		for _, m := range ms {
			if mm, ok := m.(map[string]any); ok {
				if t, _ := mm["Target"].(string); t != "" {
					covered[t] = true
				}
			}
		}
	}
	for _, m := range mounts {
		if m.Type == "volume" && m.Name != "" && !covered[m.Destination] {
			opt := ""
			if !m.RW {
				opt = ":ro"
			}
			binds = append(binds, m.Name+":"+m.Destination+opt)
		}
	}
	return binds
}

// networking keeps a container's user-defined networks and aliases; host,
// none and the default bridge need nothing beyond NetworkMode.
func networking(info *ContainerInfo, hc map[string]any) map[string]any {
	mode, _ := hc["NetworkMode"].(string)
	switch mode {
	case "host", "none", "default", "bridge", "":
		return nil
	}
	eps := map[string]any{}
	for name, raw := range info.NetworkSettings.Networks {
		var n struct {
			Aliases []string `json:"Aliases"`
		}
		_ = json.Unmarshal(raw, &n)
		ep := map[string]any{}
		if len(n.Aliases) > 0 {
			ep["Aliases"] = n.Aliases
		}
		eps[name] = ep
	}
	if len(eps) == 0 {
		return nil
	}
	return map[string]any{"EndpointsConfig": eps}
}

// normalizeUlimits writes ulimit names the way creation wants them: podman
// reports "RLIMIT_NOFILE" where its own API (and Docker's) takes "nofile".
func normalizeUlimits(hc map[string]any) {
	uls, ok := hc["Ulimits"].([]any)
	if !ok {
		return
	}
	for _, u := range uls {
		if m, ok := u.(map[string]any); ok {
			if n, ok := m["Name"].(string); ok {
				m["Name"] = strings.ToLower(strings.TrimPrefix(n, "RLIMIT_"))
			}
		}
	}
}
