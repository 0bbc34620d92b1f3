package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func newKey(t *testing.T) (crypto.PrivKey, peer.ID) {
	t.Helper()
	priv, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return priv, id
}

func TestSealOpenRoundTrip(t *testing.T) {
	priv, id := newKey(t)
	data, err := Seal(priv, "progress/v1", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	payload, signer, err := Open(data, "progress/v1", map[peer.ID]bool{id: true})
	if err != nil {
		t.Fatal(err)
	}
	if string(payload) != "hello" || signer != id {
		t.Fatalf("got payload %q signer %s, want hello from %s", payload, signer, id)
	}
	if _, _, err := Open(data, "progress/v1", nil); err != nil {
		t.Fatalf("nil trusted set must accept any valid signer: %v", err)
	}
}

// tamper decodes a sealed envelope, changes it and encodes it again.
func tamper(t *testing.T, data []byte, change func(*wire)) []byte {
	t.Helper()
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		t.Fatal(err)
	}
	change(&w)
	out, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOpenRefusals(t *testing.T) {
	priv, id := newKey(t)
	other, otherID := newKey(t)
	good, err := Seal(priv, "announce/v1", []byte(`{"v":1}`))
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _ := crypto.MarshalPublicKey(other.GetPublic())
	tests := []struct {
		name       string
		data       []byte
		want       string
		trusted    map[peer.ID]bool
		wantErr    error
		wantSigner peer.ID
	}{
		{name: "not json", data: []byte("nope"), wantErr: ErrMalformed},
		{name: "empty", data: nil, wantErr: ErrMalformed},
		{name: "trailing data", data: append(append([]byte{}, good...), []byte(` {}`)...), wantErr: ErrMalformed},
		{name: "too large", data: bytes.Repeat([]byte(" "), MaxSize+1), wantErr: ErrMalformed},
		{name: "missing type", data: tamper(t, good, func(w *wire) { w.Type = "" }), wantErr: ErrMalformed},
		{name: "no signature", data: tamper(t, good, func(w *wire) { w.Signature = nil }), wantErr: ErrUnsigned},
		{name: "no public key", data: tamper(t, good, func(w *wire) { w.PublicKey = nil }), wantErr: ErrUnsigned},
		{name: "garbage public key", data: tamper(t, good, func(w *wire) { w.PublicKey = []byte{1, 2, 3} }), wantErr: ErrMalformed},
		{name: "payload changed", data: tamper(t, good, func(w *wire) { w.Payload = []byte(`{"v":2}`) }),
			wantErr: ErrBadSignature, wantSigner: id},
		{name: "type changed", data: tamper(t, good, func(w *wire) { w.Type = "approve/v1" }), want: "approve/v1",
			wantErr: ErrBadSignature, wantSigner: id},
		{name: "key swapped", data: tamper(t, good, func(w *wire) { w.PublicKey = otherPub }),
			wantErr: ErrBadSignature, wantSigner: otherID},
		{name: "untrusted signer", data: good, trusted: map[peer.ID]bool{otherID: true},
			wantErr: ErrUntrusted, wantSigner: id},
		{name: "empty trusted set trusts nobody", data: good, trusted: map[peer.ID]bool{},
			wantErr: ErrUntrusted, wantSigner: id},
		{name: "wrong type", data: good, want: "progress/v1", wantErr: ErrWrongType, wantSigner: id},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = "announce/v1"
			}
			payload, signer, err := Open(tc.data, want, tc.trusted)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got error %v, want %v", err, tc.wantErr)
			}
			if payload != nil {
				t.Fatalf("a refused envelope must not return its payload, got %q", payload)
			}
			if signer != tc.wantSigner {
				t.Fatalf("got signer %q, want %q", signer, tc.wantSigner)
			}
		})
	}
}

// The signature must not be transferable between types that concatenate to
// the same bytes.
func TestTypePayloadBoundaryIsSigned(t *testing.T) {
	priv, _ := newKey(t)
	data, err := Seal(priv, "ab", []byte("c"))
	if err != nil {
		t.Fatal(err)
	}
	moved := tamper(t, data, func(w *wire) { w.Type, w.Payload = "a", []byte("bc") })
	if _, _, err := Open(moved, "a", nil); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("got %v, want ErrBadSignature", err)
	}
}

func TestSealRefusesNonEd25519AndOversize(t *testing.T) {
	secp, _, err := crypto.GenerateSecp256k1Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Seal(secp, "t", nil); err == nil {
		t.Fatal("a secp256k1 key was accepted")
	}
	priv, _ := newKey(t)
	if _, err := Seal(priv, "t", make([]byte, MaxSize)); err == nil {
		t.Fatal("an envelope over the size limit was sealed")
	}
	if _, err := Seal(priv, "", nil); err == nil {
		t.Fatal("an empty type was accepted")
	}
}

// TestCompatV1 keeps the first wire format readable: the file was sealed by
// the first release and must open, unchanged, forever.
func TestCompatV1(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "v1-announce.json"))
	if err != nil {
		t.Fatal(err)
	}
	payload, signer, err := Open(data, "announce/v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if signer.String() != "12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7" {
		t.Fatalf("signer changed: %s", signer)
	}
	if string(payload) != `{"version":"1.1.6","procedure":"standard"}` {
		t.Fatalf("payload changed: %s", payload)
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "operator.key")
	id, err := GenerateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	before, _ := os.ReadFile(path)
	if _, err := GenerateKeyFile(path); !errors.Is(err, os.ErrExist) {
		t.Fatalf("overwriting: got %v, want os.ErrExist", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("existing key was changed")
	}
	priv, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := peer.IDFromPrivateKey(priv); got != id {
		t.Fatalf("loaded key is %s, generated %s", got, id)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func TestLoadKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadKeyFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not a key!"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(bad); err == nil {
		t.Fatal("garbage key file was accepted")
	}
}

func FuzzOpen(f *testing.F) {
	priv, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{1}, 64)))
	if err != nil {
		f.Fatal(err)
	}
	good, err := Seal(priv, "announce/v1", []byte("payload"))
	if err != nil {
		f.Fatal(err)
	}
	compat, _ := os.ReadFile(filepath.Join("testdata", "v1-announce.json"))
	for _, seed := range [][]byte{good, compat, nil, []byte("{}"), []byte(`{"type":"x","public_key":"CAES","signature":"AA=="}`)} {
		f.Add(seed, "announce/v1")
	}
	f.Fuzz(func(t *testing.T, data []byte, typ string) {
		payload, _, err := Open(data, typ, nil)
		if err == nil && typ == "" {
			t.Fatal("opened an envelope with an empty type")
		}
		if err != nil && payload != nil {
			t.Fatal("payload returned with an error")
		}
	})
}
