package statebackup

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// pinReader yields the pin objects of an export one at a time, whichever form it has: newline-delimited JSON
// (`state export`, the 1.x REST API) or one JSON array (0.14.5's REST API). Memory stays at one object.
type pinReader struct {
	dec   *json.Decoder
	array bool
	done  bool
	n     int // objects returned so far, for error messages
}

func newPinReader(r io.Reader) (*pinReader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	first, err := peekNonSpace(br)
	if errors.Is(err, io.EOF) {
		return &pinReader{done: true}, nil // an empty export is valid: a cluster with no pins
	}
	if err != nil {
		return nil, fmt.Errorf("reading export: %w", err)
	}
	p := &pinReader{dec: json.NewDecoder(br)}
	if first == '[' {
		if _, err := p.dec.Token(); err != nil {
			return nil, fmt.Errorf("reading export array: %w", err)
		}
		p.array = true
	}
	return p, nil
}

func peekNonSpace(br *bufio.Reader) (byte, error) {
	for {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		if b != ' ' && b != '\t' && b != '\n' && b != '\r' {
			return b, br.UnreadByte()
		}
	}
}

// next returns the next pin object exactly as written, or io.EOF after the last one.
func (p *pinReader) next() ([]byte, error) {
	if p.done {
		return nil, io.EOF
	}
	if !p.dec.More() {
		p.done = true
		return nil, p.end()
	}
	var raw json.RawMessage
	if err := p.dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("reading pin %d of export: %w", p.n+1, err)
	}
	p.n++
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, fmt.Errorf("reading pin %d of export: not a JSON object", p.n)
	}
	return raw, nil
}

// end checks that the export ends where it should: a closed array, and nothing after the last object.
func (p *pinReader) end() error {
	if p.array {
		tok, err := p.dec.Token()
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // wrapped io.EOF would read as a clean end to the caller
		}
		if err != nil {
			return fmt.Errorf("reading end of export array after %d pins: %w", p.n, err)
		}
		if d, ok := tok.(json.Delim); !ok || d != ']' {
			return fmt.Errorf("reading end of export array after %d pins: found %v", p.n, tok)
		}
	}
	if tok, err := p.dec.Token(); !errors.Is(err, io.EOF) {
		if err == nil {
			err = fmt.Errorf("found %v", tok)
		}
		return fmt.Errorf("unexpected data after pin %d of export: %w", p.n, err)
	}
	return io.EOF
}

// cidOf returns the CID of a pin object (valid JSON): a string in 1.x, {"/": "..."} in 0.14.5.
func cidOf(raw []byte) (string, error) {
	if cid, ok := cidFast(raw); ok {
		return cid, nil
	}
	return cidSlow(raw)
}

func cidSlow(raw []byte) (string, error) {
	var obj struct {
		CID json.RawMessage `json:"cid"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", fmt.Errorf("reading pin object: %w", err)
	}
	c := bytes.TrimSpace(obj.CID)
	var cid string
	switch {
	case len(c) > 0 && c[0] == '"':
		if err := json.Unmarshal(c, &cid); err != nil {
			return "", fmt.Errorf("reading pin cid: %w", err)
		}
	case len(c) > 0 && c[0] == '{':
		var link struct {
			Slash string `json:"/"`
		}
		if err := json.Unmarshal(c, &link); err != nil {
			return "", fmt.Errorf("reading pin cid: %w", err)
		}
		cid = link.Slash
	}
	if cid == "" {
		return "", errors.New("pin object has no cid")
	}
	return cid, nil
}

// CountExport counts the distinct pins of an export file on disk: ndjson as `state export` writes it, a JSON
// array as 0.14.5's API gives, or either gzip-compressed. A CID that appears twice counts once.
func CountExport(path string) (int, error) {
	n, err := countPinsOnce(defaultDedupe, func() (io.ReadCloser, error) { return openExport(path) })
	if err != nil {
		return 0, fmt.Errorf("counting pins of %s: %w", path, err)
	}
	return n, nil
}

// openExport opens an export file, decompressing it if it is gzip-compressed.
func openExport(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := maybeGunzip(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return readCloser{Reader: r, Closer: f}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// maybeGunzip decompresses r if it starts with the gzip magic number.
func maybeGunzip(r io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		return gzip.NewReader(br)
	}
	return br, nil
}

// CompareCounts compares a live export's pin count with an offline export's. An offline `state export` of a raft
// peer reads only the last snapshot and can silently miss pins; short says it did, missing by how many. An
// offline export holding more than the live one (pins added since) is not short.
func CompareCounts(live, offline int) (short bool, missing int) {
	if offline < live {
		return true, live - offline
	}
	return false, 0
}
