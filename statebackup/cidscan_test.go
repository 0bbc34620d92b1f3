package statebackup

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

func TestCIDOf(t *testing.T) {
	cases := []struct {
		name, raw, want string
		wantErr         bool
	}{
		{name: "1.x string", raw: `{"name":"x","cid":"bafyA","type":"pin"}`, want: "bafyA"},
		{name: "0.14.5 link", raw: `{"cid":{"/":"bafyB"},"type":2}`, want: "bafyB"},
		{name: "spaces", raw: ` { "cid" : { "/" : "bafyC" } } `, want: "bafyC"},
		{name: "nested cid key ignored", raw: `{"metadata":{"cid":"no"},"cid":"bafyD"}`, want: "bafyD"},
		{name: "cid text inside a string", raw: `{"name":"\"cid\":\"no\"","cid":"bafyE"}`, want: "bafyE"},
		{name: "upper-case key", raw: `{"CID":"bafyF"}`, want: "bafyF"},
		{name: "escaped value", raw: `{"cid":"bafy\u0047"}`, want: "bafyG"},
		{name: "last duplicate wins", raw: `{"cid":"one","cid":"two"}`, want: "two"},
		{name: "arrays and numbers", raw: `{"a":[1,{"b":[]}],"n":-1.5e3,"t":true,"cid":"bafyH"}`, want: "bafyH"},
		{name: "no cid", raw: `{"name":"x"}`, wantErr: true},
		{name: "empty cid", raw: `{"cid":""}`, wantErr: true},
		{name: "null cid", raw: `{"cid":null}`, wantErr: true},
		{name: "link without slash", raw: `{"cid":{"x":"y"}}`, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cidOf([]byte(tc.raw))
			if tc.wantErr != (err != nil) || got != tc.want {
				t.Fatalf("cidOf = %q, %v; want %q (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// FuzzCIDScan holds the hand scanner to encoding/json's answer on every valid object it claims to understand.
func FuzzCIDScan(f *testing.F) {
	for _, rel := range sampleReleases {
		file, err := os.Open(samplePath(rel, "state-export.ndjson"))
		if err != nil {
			f.Fatal(err)
		}
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			f.Add(bytes.Clone(sc.Bytes()))
		}
		file.Close()
	}
	for _, seed := range []string{`{"cid":"a"}`, `{"cid":{"/":"b"}}`, `{"x":"}","cid":"c"}`, `{"Cid":"d","cid":"e"}`,
		`{"a":{"cid":"f"}}`, `{"cid":"g","a":[{"cid":"h"}]}`, `{"cid" : "i" , "z":null}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		fast, ok := cidFast(raw)
		if !ok {
			return
		}
		slow, err := cidSlow(raw)
		if err != nil || slow != fast {
			t.Fatalf("%s: scanner says %q, encoding/json says %q (%v)", raw, fast, slow, err)
		}
	})
}
