package cluster

import (
	"bytes"
	"encoding/json"
	"testing"
)

func FuzzDecodePins(f *testing.F) {
	for _, release := range sampleReleases() {
		f.Add(readSample(f, release, "get-allocations.ndjson"))
		f.Add(readSample(f, release, "state-export-removed-peer.ndjson"))
	}
	f.Add([]byte(`[{"cid":{"/":"bafkreianuy"}}, {"cid":"x"}]`))
	f.Add([]byte("null\n{\"cid\":\"a\"}\n"))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, body []byte) {
		n := 0
		_ = decodeEach(bytes.NewReader(body), func(p *json.RawMessage) error {
			raw := *p
			n++
			if !json.Valid(raw) || !bytes.Contains(body, raw) {
				t.Fatalf("object %d is not a verbatim piece of the body: %q", n, raw)
			}
			if cid, err := pinCID(raw); err == nil && cid == "" {
				t.Fatalf("pinCID accepted an empty cid in %q", raw)
			}
			if n > len(body) {
				t.Fatalf("%d objects from %d bytes", n, len(body))
			}
			return nil
		})
	})
}
