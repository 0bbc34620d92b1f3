package coordination

import (
	"context"
	"encoding/json"
	"fmt"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/envelope"
)

func sealWith(key crypto.PrivKey, typ string, payload []byte) ([]byte, error) {
	b, err := envelope.Seal(key, typ, payload)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", typ, err)
	}
	return b, nil
}

func openFrom(data []byte, typ string) ([]byte, peer.ID, error) {
	return envelope.Open(data, typ, nil)
}

// validateProgress accepts a progress report only when it is signed by the
// daemon it reports about: no daemon can speak for another.
func (c *Coordinator) validateProgress(_ context.Context, from peer.ID, data []byte) pubsub.ValidationResult {
	payload, signer, err := openFrom(data, ProgressType)
	if err != nil {
		c.log.Warn("progress report refused", zap.Stringer("from", from), zap.Error(err))
		return pubsub.ValidationReject
	}
	var pm progressMsg
	if err := json.Unmarshal(payload, &pm); err != nil {
		c.log.Warn("progress report refused: malformed", zap.Stringer("from", from), zap.Error(err))
		return pubsub.ValidationReject
	}
	if pm.HostID != signer.String() {
		c.log.Warn("progress report refused: signed by another daemon than the one it reports about",
			zap.String("host", pm.HostID), zap.Stringer("signer", signer))
		return pubsub.ValidationReject
	}
	return pubsub.ValidationAccept
}
