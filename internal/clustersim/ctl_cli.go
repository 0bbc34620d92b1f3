package clustersim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// CtlMain is main() of ipfs-cluster-ctl.
func CtlMain(args []string, stdio IO) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return RunCtl(ctx, args, stdio, ProfileFor(Version))
}

var ctlGlobalFlags = []flagSpec{
	{Names: []string{"host", "l"}}, {Names: []string{"secret"}}, {Names: []string{"https", "s"}, Bool: true},
	{Names: []string{"no-check-certificate"}, Bool: true}, {Names: []string{"encoding", "enc"}},
	{Names: []string{"timeout", "t"}}, {Names: []string{"debug", "d"}, Bool: true},
	{Names: []string{"basic-auth"}}, {Names: []string{"force-http", "f"}, Bool: true},
	{Names: []string{"help", "h"}, Bool: true}, {Names: []string{"version", "v"}, Bool: true},
}

// ctl is one invocation of ipfs-cluster-ctl.
type ctl struct {
	io      IO
	profile Profile
	base    string
	json    bool
	client  *http.Client
}

// RunCtl runs ipfs-cluster-ctl with args and returns the exit code.
func RunCtl(ctx context.Context, args []string, stdio IO, p Profile) int {
	var glob []string
	i := 0
	for ; i < len(args) && strings.HasPrefix(args[i], "-"); i++ {
		glob = append(glob, args[i])
		name := strings.TrimLeft(args[i], "-")
		if !strings.Contains(name, "=") && isValueFlag(name) && i+1 < len(args) {
			i++
			glob = append(glob, args[i])
		}
	}
	g, _, err := parseFlags(glob, ctlGlobalFlags)
	if err != nil {
		fmt.Fprintln(stdio.Stderr, "Incorrect Usage.", err)
		return 1
	}
	rest := args[i:]
	switch {
	case g["version"] == "true":
		fmt.Fprintf(stdio.Stdout, "ipfs-cluster-ctl version %s\n", p.Version)
		return 0
	case g["help"] == "true" || len(rest) == 0 || rest[0] == "help" || rest[0] == "h":
		fmt.Fprint(stdio.Stdout, renderHelp(helpCtl, p))
		return 0
	}
	host := g["host"]
	if host == "" {
		host = "/ip4/127.0.0.1/tcp/9094"
	}
	a, err := ParseAddr(strings.Split(host, ",")[0])
	if err != nil {
		fmt.Fprintf(stdio.Stderr, "error parsing --host: %s\n", err)
		return 1
	}
	c := &ctl{io: stdio, profile: p, base: "http://" + a.HostPort(), json: g["encoding"] == "json",
		client: &http.Client{Timeout: 60 * time.Second}}
	if err := c.run(ctx, rest); err != nil {
		fmt.Fprintf(stdio.Stderr, "%s\n", err)
		return 1
	}
	return 0
}

func isValueFlag(name string) bool {
	for _, s := range ctlGlobalFlags {
		for _, n := range s.Names {
			if n == name {
				return !s.Bool
			}
		}
	}
	return false
}

func (c *ctl) run(ctx context.Context, args []string) error {
	cmd := strings.Join(args[:min(2, len(args))], " ")
	switch {
	case args[0] == "id":
		return c.show(ctx, http.MethodGet, "/id", c.textID)
	case args[0] == "version":
		return c.show(ctx, http.MethodGet, "/version", func(v map[string]any) string { return fmt.Sprint(v["version"]) })
	case cmd == "peers ls":
		return c.list(ctx, "/peers", c.textID)
	case cmd == "peers rm" && len(args) == 3:
		return c.show(ctx, http.MethodDelete, "/peers/"+url.PathEscape(args[2]), nil)
	case cmd == "pin add":
		return c.pinAdd(ctx, args[2:])
	case cmd == "pin rm" && len(args) >= 3:
		return c.show(ctx, http.MethodDelete, "/pins/"+url.PathEscape(args[len(args)-1]), textPin)
	case cmd == "pin ls":
		return c.list(ctx, "/allocations?filter=all", textPin)
	}
	return fmt.Errorf("unknown or incomplete command: %s (see --help)", strings.Join(args, " "))
}

func (c *ctl) pinAdd(ctx context.Context, args []string) error {
	f, pos, err := parseFlags(args, []flagSpec{
		{Names: []string{"no-status", "ns"}, Bool: true}, {Names: []string{"name", "n"}},
		{Names: []string{"replication-min", "rmin"}}, {Names: []string{"replication-max", "rmax"}},
		{Names: []string{"wait", "w"}, Bool: true},
	})
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("pin add needs exactly one CID")
	}
	q := url.Values{}
	if f["name"] != "" {
		q.Set("name", f["name"])
	}
	return c.show(ctx, http.MethodPost, "/pins/"+url.PathEscape(pos[0])+"?"+q.Encode(), textPin)
}

// do sends a request; API errors become the real ctl's error text.
func (c *ctl) do(ctx context.Context, method, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		//lint:ignore ST1005 the real ipfs-cluster-ctl prints exactly this
		return nil, fmt.Errorf("An error occurred:\n  Code: 0\n  Message: %s", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &e)
		//lint:ignore ST1005 the real ipfs-cluster-ctl prints exactly this
		return nil, fmt.Errorf("An error occurred:\n  Code: %d\n  Message: %s", resp.StatusCode, e.Message)
	}
	return body, nil
}

func (c *ctl) show(ctx context.Context, method, path string, text func(map[string]any) string) error {
	body, err := c.do(ctx, method, path)
	if err != nil || len(bytes.TrimSpace(body)) == 0 {
		return err
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("decoding answer: %w", err)
	}
	return c.print([]map[string]any{v}, false, text)
}

func (c *ctl) list(ctx context.Context, path string, text func(map[string]any) string) error {
	body, err := c.do(ctx, http.MethodGet, path)
	if err != nil {
		return err
	}
	var items []map[string]any
	if trimmed := bytes.TrimSpace(body); bytes.HasPrefix(trimmed, []byte("[")) {
		err = json.Unmarshal(trimmed, &items)
	} else {
		dec := json.NewDecoder(bytes.NewReader(body))
		for dec.More() {
			var v map[string]any
			if err = dec.Decode(&v); err != nil {
				break
			}
			items = append(items, v)
		}
	}
	if err != nil {
		return fmt.Errorf("decoding answer: %w", err)
	}
	return c.print(items, true, text)
}

func (c *ctl) print(items []map[string]any, list bool, text func(map[string]any) string) error {
	if c.json {
		var v any = items
		if !list {
			v = items[0]
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.io.Stdout, "%s\n", b)
		return err
	}
	for _, it := range items {
		if text != nil {
			fmt.Fprintln(c.io.Stdout, text(it))
		}
	}
	return nil
}

func (c *ctl) textID(v map[string]any) string {
	peers, _ := v["cluster_peers"].([]any)
	var b strings.Builder
	fmt.Fprintf(&b, "%v | %v | Sees %d other peers\n  > Addresses:", v["id"], v["peername"], max(0, len(peers)-1))
	addrs, _ := v["addresses"].([]any)
	for _, a := range addrs {
		fmt.Fprintf(&b, "\n    - %v", a)
	}
	if ipfs, ok := v["ipfs"].(map[string]any); ok {
		fmt.Fprintf(&b, "\n  > IPFS: %v", ipfs["error"])
	}
	return b.String()
}

func textPin(v map[string]any) string {
	cidStr := fmt.Sprint(v["cid"])
	if m, ok := v["cid"].(map[string]any); ok {
		cidStr = fmt.Sprint(m["/"])
	}
	return fmt.Sprintf("%s | %v | PIN | Repl. Factor: -1 | Allocations: [everywhere] | Recursive | Added: %v",
		cidStr, v["name"], v["timestamp"])
}
