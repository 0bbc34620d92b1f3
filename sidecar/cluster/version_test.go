package cluster

import "testing"

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.1.6", "1.1.6", 0},
		{"v1.0.8", "1.0.8", 0},
		{"1.1.6+git0123abc", "1.1.6", 0},
		{"0.14.5", "1.0.8", -1},
		{"1.0.8", "1.1.6", -1},
		{"1.1.6", "1.0.8", 1},
		{"1.10.0", "1.9.9", 1},
		{"0.14.5", "0.9.0", 1},
		{"1.2.0-rc1", "1.2.0", -1},
		{"1.2.0", "1.2.0-rc1", 1},
		{"1.2.0-rc1", "1.1.6", 1},
		{"1.2.0-rc2", "1.2.0-rc10", -1},
		{"1.2.0-alpha", "1.2.0-beta", -1},
		{"1.2.0-rc.1", "1.2.0-rc.1.1", -1},
		{"1.2.0-1", "1.2.0-rc", -1},
		{"1.2", "1.2.0", 0},
		{"1", "1.0.1", -1},
		{"01.2.3", "1.2.3", 0},
	}
	for _, tt := range tests {
		t.Run(tt.a+"_vs_"+tt.b, func(t *testing.T) {
			got, err := CompareVersions(tt.a, tt.b)
			if err != nil || got != tt.want {
				t.Fatalf("CompareVersions(%q, %q) = %d, %v; want %d", tt.a, tt.b, got, err, tt.want)
			}
			back, err := CompareVersions(tt.b, tt.a)
			if err != nil || back != -tt.want {
				t.Fatalf("CompareVersions(%q, %q) = %d, %v; want %d", tt.b, tt.a, back, err, -tt.want)
			}
		})
	}
}

func TestCompareVersionsInvalid(t *testing.T) {
	for _, v := range []string{"", "v", "1.2.3.4", "1..2", "one.two", "1.2.-3", "1.2.3-", "+1.2.3", "1.2.x", "9999999999.0.0"} {
		if _, err := CompareVersions(v, "1.0.0"); err == nil {
			t.Errorf("CompareVersions(%q) accepted an invalid version", v)
		}
		if _, err := CompareVersions("1.0.0", v); err == nil {
			t.Errorf("CompareVersions(_, %q) accepted an invalid version", v)
		}
	}
}

func TestNormalizeVersion(t *testing.T) {
	tests := map[string]string{
		"1.1.6": "1.1.6", "v1.0.8": "1.0.8", "1.1.6+git0123abc": "1.1.6", "1.2.0-rc1": "1.2.0-rc1",
		" 0.14.5\n": "0.14.5", "1.2": "1.2.0", "v1.2.0-rc1+build.5": "1.2.0-rc1",
	}
	for in, want := range tests {
		if got, err := NormalizeVersion(in); err != nil || got != want {
			t.Errorf("NormalizeVersion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestParseVersionOutput(t *testing.T) {
	tests := []struct {
		name, out, want string
		wantErr         bool
	}{
		{"1.1.6", "ipfs-cluster-service version 1.1.6\n", "1.1.6", false},
		{"commit suffix", "ipfs-cluster-service version 1.1.6+git9f8e7d6c5b4a\n", "1.1.6", false},
		{"pre-release", "ipfs-cluster-service version 1.2.0-rc1\n", "1.2.0-rc1", false},
		{"after a log line", "2026-11-24T11:31:56Z\tINFO\tconfig loaded\nipfs-cluster-service version 0.14.5\n", "0.14.5", false},
		{"no version", "command not found\n", "", true},
		{"garbage after the word", "ipfs-cluster-service version unknown\n", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVersionOutput(tt.out)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseVersionOutput = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	for _, release := range sampleReleases() {
		got, err := parseVersionOutput(string(readSample(t, release, "service-version.txt")))
		if want := release[:len(release)-5]; err != nil || got != want {
			t.Errorf("%s: parseVersionOutput = %q, %v; want %q", release, got, err, want)
		}
	}
}
