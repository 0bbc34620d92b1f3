// Package envelope signs and verifies the messages the daemons exchange
// (announcements, approvals, progress reports).
//
// An envelope is a small JSON object:
//
//	{"type":"...","payload":"<base64>","public_key":"<base64>","signature":"<base64>"}
//
// JSON rather than protobuf because operators read these in logs and the
// wire format must stay readable across releases (see compat_test.go). The
// public key is a libp2p-marshalled Ed25519 key, so the signer is named by the
// same peer ID as a daemon or an operator key. The signature covers a domain
// prefix, the type and the payload, so a signature made for one purpose (or
// by another program using the same key) cannot be replayed as another.
package envelope

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// MaxSize bounds an encoded envelope: announcements and progress reports are
// a few KiB, and anything larger is refused before it is decoded.
const MaxSize = 1 << 20

// domain separates envelope signatures from any other use of the same key.
const domain = "upgraded/envelope/v1\x00"

// Errors returned by Open, wrapped with detail; callers branch on them to
// decide whether a message is garbage, forged or merely not for them.
var (
	ErrMalformed    = errors.New("malformed envelope")
	ErrUnsigned     = errors.New("envelope is not signed")
	ErrBadSignature = errors.New("envelope signature does not verify")
	ErrUntrusted    = errors.New("envelope signer is not trusted")
	ErrWrongType    = errors.New("envelope has an unexpected type")
)

// wire is the JSON form. Unknown fields are ignored so newer senders may add
// fields that older daemons skip.
type wire struct {
	Type      string `json:"type"`
	Payload   []byte `json:"payload"`
	PublicKey []byte `json:"public_key"`
	Signature []byte `json:"signature"`
}

// signedBytes is what the signature covers: the domain, the length-prefixed
// type (so type and payload cannot be re-split) and the payload.
func signedBytes(typ string, payload []byte) []byte {
	b := make([]byte, 0, len(domain)+binary.MaxVarintLen64+len(typ)+len(payload))
	b = append(b, domain...)
	b = binary.AppendUvarint(b, uint64(len(typ)))
	b = append(b, typ...)
	return append(b, payload...)
}

// Seal signs payload as a message of type typ with priv (an Ed25519 key).
func Seal(priv crypto.PrivKey, typ string, payload []byte) ([]byte, error) {
	if priv == nil || priv.Type() != cryptopb.KeyType_Ed25519 {
		return nil, errors.New("sealing envelope: an Ed25519 key is required")
	}
	if typ == "" {
		return nil, errors.New("sealing envelope: empty type")
	}
	pub, err := crypto.MarshalPublicKey(priv.GetPublic())
	if err != nil {
		return nil, fmt.Errorf("sealing %s envelope: encoding public key: %w", typ, err)
	}
	sig, err := priv.Sign(signedBytes(typ, payload))
	if err != nil {
		return nil, fmt.Errorf("sealing %s envelope: signing: %w", typ, err)
	}
	out, err := json.Marshal(wire{Type: typ, Payload: payload, PublicKey: pub, Signature: sig})
	if err != nil {
		return nil, fmt.Errorf("sealing %s envelope: encoding: %w", typ, err)
	}
	if len(out) > MaxSize {
		return nil, fmt.Errorf("sealing %s envelope: %d bytes exceeds the %d byte limit", typ, len(out), MaxSize)
	}
	return out, nil
}

// Open decodes and verifies an envelope and returns its payload and signer.
// trusted, when not nil, lists the only signers accepted. The signer is also
// returned with ErrUntrusted and ErrWrongType, so callers can log who sent it.
func Open(data []byte, wantType string, trusted map[peer.ID]bool) ([]byte, peer.ID, error) {
	w, err := decode(data)
	if err != nil {
		return nil, "", err
	}
	signer, err := verify(w)
	if err != nil {
		return nil, signer, err
	}
	if trusted != nil && !trusted[signer] {
		return nil, signer, fmt.Errorf("%w: %s", ErrUntrusted, signer)
	}
	if w.Type != wantType {
		return nil, signer, fmt.Errorf("%w: got %q, want %q", ErrWrongType, w.Type, wantType)
	}
	return w.Payload, signer, nil
}

func decode(data []byte) (wire, error) {
	var w wire
	if len(data) > MaxSize {
		return w, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrMalformed, len(data), MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&w); err != nil {
		return w, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if dec.More() {
		return w, fmt.Errorf("%w: trailing data after the envelope", ErrMalformed)
	}
	if w.Type == "" {
		return w, fmt.Errorf("%w: missing type", ErrMalformed)
	}
	return w, nil
}

// verify checks the signature and returns the signer's peer ID.
func verify(w wire) (peer.ID, error) {
	if len(w.PublicKey) == 0 || len(w.Signature) == 0 {
		return "", ErrUnsigned
	}
	pub, err := crypto.UnmarshalPublicKey(w.PublicKey)
	if err != nil {
		return "", fmt.Errorf("%w: public key: %w", ErrMalformed, err)
	}
	if pub.Type() != cryptopb.KeyType_Ed25519 {
		return "", fmt.Errorf("%w: key type %s is not accepted, only Ed25519", ErrMalformed, pub.Type())
	}
	signer, err := peer.IDFromPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: deriving signer: %w", ErrMalformed, err)
	}
	ok, err := pub.Verify(signedBytes(w.Type, w.Payload), w.Signature)
	if err != nil || !ok {
		return signer, fmt.Errorf("%w (signer %s)", ErrBadSignature, signer)
	}
	return signer, nil
}
