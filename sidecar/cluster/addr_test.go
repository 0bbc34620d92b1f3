package cluster

import "testing"

func TestAPIURL(t *testing.T) {
	tests := []struct {
		name, addr, want string
		wantErr          bool
	}{
		{"ip4", "/ip4/127.0.0.1/tcp/9094", "http://127.0.0.1:9094", false},
		{"ip4 wildcard dials loopback", "/ip4/0.0.0.0/tcp/9094", "http://127.0.0.1:9094", false},
		{"ip6", "/ip6/::1/tcp/9094", "http://[::1]:9094", false},
		{"ip6 wildcard", "/ip6/::/tcp/9094", "http://[::1]:9094", false},
		{"dns", "/dns/cluster.example.org/tcp/9094", "http://cluster.example.org:9094", false},
		{"dns4", "/dns4/localhost/tcp/9094", "http://localhost:9094", false},
		{"dns6", "/dns6/localhost/tcp/9094", "http://localhost:9094", false},
		{"https suffix", "/ip4/127.0.0.1/tcp/9094/https", "https://127.0.0.1:9094", false},
		{"http suffix", "/ip4/127.0.0.1/tcp/9094/http", "http://127.0.0.1:9094", false},
		{"sample port", "/ip4/127.0.0.1/tcp/24104", "http://127.0.0.1:24104", false},
		{"empty", "", "", true},
		{"no leading slash", "ip4/127.0.0.1/tcp/9094", "", true},
		{"udp", "/ip4/127.0.0.1/udp/9094", "", true},
		{"bad ip4", "/ip4/300.0.0.1/tcp/9094", "", true},
		{"ip6 under ip4", "/ip4/::1/tcp/9094", "", true},
		{"ip4 under ip6", "/ip6/127.0.0.1/tcp/9094", "", true},
		{"port zero", "/ip4/127.0.0.1/tcp/0", "", true},
		{"port too big", "/ip4/127.0.0.1/tcp/70000", "", true},
		{"port not a number", "/ip4/127.0.0.1/tcp/http", "", true},
		{"unix socket", "/unix/run/cluster.sock", "", true},
		{"trailing p2p", "/ip4/127.0.0.1/tcp/9094/p2p/12D3KooW", "", true},
		{"dnsaddr", "/dnsaddr/example.org/tcp/9094", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := APIURL(tt.addr)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("APIURL(%q) = %q, %v; want %q, error %v", tt.addr, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
