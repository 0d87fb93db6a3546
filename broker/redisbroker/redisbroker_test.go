package redisbroker_test

import (
	"context"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/broker/redisbroker"
	"github.com/streamapi/streamapi/internal/brokertest"
	"github.com/streamapi/streamapi/internal/testenv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRedis_Conformance(t *testing.T) {
	url := testenv.Redis(t)
	brokertest.Run(t, brokertest.PerTest(func(prefix string) (streamapi.Broker, error) {
		return redisbroker.Open(context.Background(), url, redisbroker.Options{Prefix: prefix})
	}))
}

func TestOpen_Errors(t *testing.T) {
	ctx := context.Background()
	if _, err := redisbroker.Open(ctx, "http://x", redisbroker.Options{}); err == nil {
		t.Error("Open accepted an http URL")
	}
	if _, err := redisbroker.Open(ctx, "redis://127.0.0.1:1", redisbroker.Options{}); err == nil {
		t.Error("Open succeeded with nothing listening")
	}
}
