package mux_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/examples/polls"
	"github.com/streamapi/streamapi/internal/hub"
	"github.com/streamapi/streamapi/internal/mux"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// sink is a peer that encodes each frame it is sent, as the connection's
// writer does, and keeps only the byte count.
type sink struct{ bytes atomic.Int64 }

func (s *sink) Send(f streamapi.Frame)  { s.bytes.Add(int64(len(f.Bytes()))) }
func (s *sink) User() *streamapi.User   { return nil }
func (s *sink) SetUser(*streamapi.User) {}

// The hot path of one request frame: decode, dispatch to the resource,
// encode the reply. "no store" answers from a resource that does nothing
// (the framework's own cost); the polls cases read and write SQLite
// through the example app.
//
//	go test -run '^$' -bench Handle -benchmem ./internal/mux/
func BenchmarkHandle(b *testing.B) {
	b.Run("no store", func(b *testing.B) {
		m, _, _, _, _ := setup(streamapi.Reply{Data: map[string]any{"id": 1, "name": "thing"}})
		benchFrames(b, m, func(i int) string {
			return fmt.Sprintf(`{"stream":"things","payload":{"action":"retrieve","pk":1,"request_id":%d}}`, i)
		})
	})
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "bench.db"), sqlstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, polls.Migrations()); err != nil {
		b.Fatal(err)
	}
	app, err := polls.New(db, nil)
	if err != nil {
		b.Fatal(err)
	}
	byStream := map[string]streamapi.Resource{}
	for _, r := range app.Resources() {
		r.Init(streamapi.Defaults{PageSize: 25})
		byStream[r.Stream()] = r
	}
	m := mux.New(byStream, hub.New(nil), nil, nil)
	if err := app.Questions.Create(ctx, &polls.Question{QuestionText: "q"}); err != nil {
		b.Fatal(err)
	}
	b.Run("polls retrieve", func(b *testing.B) {
		benchFrames(b, m, func(i int) string {
			return fmt.Sprintf(`{"stream":"questions","payload":{"action":"retrieve","pk":1,"request_id":%d}}`, i)
		})
	})
	b.Run("polls create", func(b *testing.B) {
		benchFrames(b, m, func(i int) string {
			return fmt.Sprintf(`{"stream":"questions","payload":{"action":"create","data":{"question_text":"q%d"},"request_id":%d}}`, i, i)
		})
	})
}

func benchFrames(b *testing.B, m *mux.Mux, frame func(i int) string) {
	frames := make([][]byte, 1024)
	for i := range frames {
		frames[i] = []byte(frame(i))
	}
	p := &sink{}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.Handle(ctx, p, frames[i%len(frames)])
	}
	b.StopTimer()
	if p.bytes.Load() == 0 {
		b.Fatal("no reply was encoded")
	}
}
