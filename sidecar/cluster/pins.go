package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// streamErrorTrailer is the trailer in which 1.x reports an error that
// happened after the stream had started.
const streamErrorTrailer = "X-Stream-Error"

// StreamPins calls fn for every pin of GET /allocations?filter=all, in the
// order received, without holding the whole pinset in memory. raw is the
// object exactly as the peer sent it (for a faithful `state export` copy);
// cid is its string form whichever release wrote it. An error from fn stops
// the stream and is returned; so is a non-empty X-Stream-Error trailer, since
// then the pinset received is incomplete.
func (c *Client) StreamPins(ctx context.Context, fn func(cid string, raw json.RawMessage) error) error {
	n := 0
	err := streamEach(ctx, c, "/allocations", url.Values{"filter": {"all"}}, func(raw *json.RawMessage) error {
		n++
		cid, err := pinCID(*raw)
		if err != nil {
			return fmt.Errorf("pin #%d: %w", n, err)
		}
		return fn(cid, *raw)
	})
	if err != nil {
		return fmt.Errorf("reading the pinset: %w", err)
	}
	return nil
}

// PinCount counts the pins of the whole pinset (see StreamPins).
func (c *Client) PinCount(ctx context.Context) (int, error) {
	n := 0
	err := c.StreamPins(ctx, func(string, json.RawMessage) error {
		n++
		return nil
	})
	return n, err
}

// streamEach GETs path and decodes every object of the answer into a T for
// fn (a json.RawMessage for a verbatim copy): one pass over the bytes, where
// a RawMessage that fn unmarshals again takes four (the peer list at 50
// peers is 370 kB, read at every poll of a verification once /id lists every
// peer).
func streamEach[T any](ctx context.Context, c *Client, path string, q url.Values, fn func(*T) error) error {
	resp, err := c.send(ctx, http.MethodGet, path, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	where := "GET " + resp.Request.URL.String()
	if err := decodeEach(resp.Body, fn); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	// Trailers are only known once the body has been read to its end.
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("%s: reading the end of the stream: %w", where, err)
	}
	if msg := resp.Trailer.Get(streamErrorTrailer); msg != "" {
		return fmt.Errorf("%s: the peer reported an error mid-stream: %s", where, msg)
	}
	return nil
}

// decodeEach reads either one JSON array (0.14.5) or a sequence of JSON
// values (1.x, newline-delimited) and calls fn for each element, decoded into
// a T, one at a time. A null element is skipped; a null or empty body has no
// elements.
func decodeEach[T any](r io.Reader, fn func(*T) error) error {
	br := bufio.NewReader(r)
	first, err := firstNonSpace(br)
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return err
	}
	dec := json.NewDecoder(br)
	if first == '[' {
		return decodeArray(dec, fn)
	}
	for {
		var v *T
		if err := dec.Decode(&v); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("decoding the stream: %w", err)
		}
		if v == nil {
			continue
		}
		if err := fn(v); err != nil {
			return err
		}
	}
}

func decodeArray[T any](dec *json.Decoder, fn func(*T) error) error {
	if _, err := dec.Token(); err != nil { // the '['
		return fmt.Errorf("decoding the array: %w", err)
	}
	for dec.More() {
		var v *T
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("decoding the array: %w", err)
		}
		if v == nil {
			continue
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the ']'
		return fmt.Errorf("decoding the array: %w", err)
	}
	// Nothing but white space may follow the array.
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("decoding the array: data after its end")
	}
	return nil
}

// firstNonSpace peeks at the first byte that is not JSON white space.
func firstNonSpace(br *bufio.Reader) (byte, error) {
	for {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return b, br.UnreadByte()
	}
}

// pinCID takes the cid of a pin object: a string in 1.x, {"/": "..."} in 0.14.5.
func pinCID(raw json.RawMessage) (string, error) {
	var pin struct {
		CID json.RawMessage `json:"cid"`
	}
	if err := json.Unmarshal(raw, &pin); err != nil {
		return "", fmt.Errorf("decoding: %w", err)
	}
	if isNull(pin.CID) {
		return "", errors.New("no cid")
	}
	var cid string
	if err := json.Unmarshal(pin.CID, &cid); err != nil {
		var link struct {
			Slash string `json:"/"`
		}
		if err := json.Unmarshal(pin.CID, &link); err != nil {
			return "", fmt.Errorf("cid is neither a string nor {\"/\": string}: %s", truncate(string(pin.CID), 80))
		}
		cid = link.Slash
	}
	if cid == "" {
		return "", errors.New("no cid")
	}
	return cid, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
