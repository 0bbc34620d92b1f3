package cluster

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// samplesDir holds the captured answers of real releases.
const samplesDir = "../../testdata/samples"

// sampleReleases are the sample folders; every golden test runs over all.
func sampleReleases() []string {
	return []string{"0.14.5-crdt", "1.0.8-crdt", "1.0.8-raft", "1.1.6-crdt", "1.1.6-raft"}
}

func readSample(t testing.TB, release, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(samplesDir, release, name))
	if err != nil {
		t.Fatalf("reading sample: %v", err)
	}
	return data
}

// sampleCIDs finds the CIDs of a sample file by pattern, independently of
// the decoder under test, in file order.
func sampleCIDs(t testing.TB, release, name string) []string {
	t.Helper()
	return regexp.MustCompile(`bafk[a-z2-7]{50,}`).FindAllString(string(readSample(t, release, name)), -1)
}
