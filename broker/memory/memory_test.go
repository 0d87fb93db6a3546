package memory_test

import (
	"context"
	"sync"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/broker/memory"
	"github.com/streamapi/streamapi/internal/brokertest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemory_Conformance(t *testing.T) {
	// One process has one bus: every "connection" of a test is the same
	// broker.
	var mu sync.Mutex
	buses := map[testing.TB]*memory.Broker{}
	brokertest.Run(t, func(t testing.TB) streamapi.Broker {
		mu.Lock()
		defer mu.Unlock()
		if b := buses[t]; b != nil {
			return b
		}
		b := memory.New()
		buses[t] = b
		t.Cleanup(func() { b.Close() })
		return b
	})
}

// A handler may cancel its own subscription while being called.
func TestMemory_CancelFromHandler(t *testing.T) {
	b := memory.New()
	defer b.Close()
	var cancel func()
	n := 0
	cancel, err := b.Subscribe(context.Background(), "m", func(context.Context, streamapi.Change) {
		n++
		cancel()
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_ = b.Publish(ctx, streamapi.Change{Model: "m"})
	_ = b.Publish(ctx, streamapi.Change{Model: "m"})
	if n != 1 {
		t.Fatalf("handler called %d times, want 1", n)
	}
}
