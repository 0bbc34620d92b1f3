package clustersim

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSlowStart: the slow-start fault's delay is read from its file at each
// start, and is zero without a file or with an unreadable one.
func TestSlowStart(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "slow")
	t.Setenv(SlowStartFileEnv, flag)
	cases := []struct {
		name    string
		content *string
		want    time.Duration
	}{
		{"no file", nil, 0},
		{"a duration", slowPtr("12s\n"), 12 * time.Second},
		{"garbage", slowPtr("soon"), 0},
		{"negative", slowPtr("-3s"), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_ = os.Remove(flag)
			if tc.content != nil {
				if err := os.WriteFile(flag, []byte(*tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := slowStart(); got != tc.want {
				t.Fatalf("slowStart() = %v, want %v", got, tc.want)
			}
		})
	}
}

func slowPtr(s string) *string { return &s }
