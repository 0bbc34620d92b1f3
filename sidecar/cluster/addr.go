package cluster

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// APIURL turns the REST API's listen multiaddr into the URL a client on this
// host dials: /ip4/127.0.0.1/tcp/9094 -> http://127.0.0.1:9094. A wildcard
// listen address (0.0.0.0, ::) is dialled on loopback. An optional trailing
// /http or /https picks the scheme.
func APIURL(multiaddr string) (string, error) {
	parts := strings.Split(strings.TrimSpace(multiaddr), "/")
	// A well-formed multiaddr starts with "/", so parts[0] is empty.
	if len(parts) < 5 || parts[0] != "" {
		return "", fmt.Errorf("API address %q is not a /ip4|ip6|dns/HOST/tcp/PORT multiaddr", multiaddr)
	}
	host, err := apiHost(parts[1], parts[2])
	if err != nil {
		return "", fmt.Errorf("API address %q: %w", multiaddr, err)
	}
	if parts[3] != "tcp" {
		return "", fmt.Errorf("API address %q: want tcp after the host, got %q", multiaddr, parts[3])
	}
	port, err := strconv.Atoi(parts[4])
	if err != nil || port <= 0 || port > 65535 {
		return "", fmt.Errorf("API address %q: bad tcp port %q", multiaddr, parts[4])
	}
	scheme := "http"
	switch rest := parts[5:]; {
	case len(rest) == 0:
	case len(rest) == 1 && (rest[0] == "http" || rest[0] == "https"):
		scheme = rest[0]
	default:
		return "", fmt.Errorf("API address %q: unsupported suffix /%s", multiaddr, strings.Join(rest, "/"))
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port)), nil
}

func apiHost(proto, value string) (string, error) {
	switch proto {
	case "ip4", "ip6":
		ip := net.ParseIP(value)
		if ip == nil || (proto == "ip4") == strings.Contains(value, ":") {
			return "", fmt.Errorf("bad %s address %q", proto, value)
		}
		if ip.IsUnspecified() {
			if proto == "ip4" {
				return "127.0.0.1", nil
			}
			return "::1", nil
		}
		return ip.String(), nil
	case "dns", "dns4", "dns6":
		if value == "" || strings.ContainsAny(value, " :@?#") {
			return "", fmt.Errorf("bad host name %q", value)
		}
		return value, nil
	default:
		return "", fmt.Errorf("unsupported protocol /%s (want ip4, ip6 or dns)", proto)
	}
}
