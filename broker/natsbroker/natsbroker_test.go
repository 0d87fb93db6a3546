package natsbroker_test

import (
	"context"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/broker/natsbroker"
	"github.com/streamapi/streamapi/internal/brokertest"
	"github.com/streamapi/streamapi/internal/testenv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNATS_Conformance(t *testing.T) {
	url := testenv.NATS(t)
	brokertest.Run(t, brokertest.PerTest(func(prefix string) (streamapi.Broker, error) {
		return natsbroker.Open(context.Background(), url, natsbroker.Options{Prefix: prefix})
	}))
}

func TestOpen_Errors(t *testing.T) {
	ctx := context.Background()
	if _, err := natsbroker.Open(ctx, "http://x", natsbroker.Options{}); err == nil {
		t.Error("Open accepted an http URL")
	}
	if _, err := natsbroker.Open(ctx, "nats://127.0.0.1:1", natsbroker.Options{}); err == nil {
		t.Error("Open succeeded with nothing listening")
	}
}
