package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// Only K (U+212A) and ſ (U+017F), among all non-ASCII runes, make
// encoding/json match a field named by an ASCII letter: decodeFast turns
// away frames holding them, and compares keys with ASCII folding only.
func TestJSONFoldingOntoASCII(t *testing.T) {
	type letters struct {
		A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P, Q, R, S, T, U, V, W, X, Y, Z int
	}
	for r := rune(0x80); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		var v letters
		if err := json.Unmarshal([]byte(`{"`+string(r)+`":1}`), &v); err != nil {
			t.Fatal(err)
		}
		if v != (letters{}) && r != '\u212a' && r != '\u017f' {
			t.Fatalf("encoding/json matched %U to a field: %+v", r, v)
		}
	}
}

// sameDecode checks that whenever decodeFast accepts a frame, it returns
// what decodeExact returns.
func sameDecode(t *testing.T, frame []byte) (fast bool) {
	t.Helper()
	got, ok := decodeFast(frame)
	if !ok {
		return false
	}
	want, err := decodeExact(frame)
	if err != nil {
		t.Fatalf("fast path accepted %s, which the exact decode refuses: %v", frame, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("frame %s:\nfast  %+v\nexact %+v", frame, got, want)
	}
	return true
}

// Random frames built from the protocol's keys, in every case, repeated,
// escaped, nested inside data, with values of every JSON type: the fast path
// never disagrees with the exact decode, and accepts the ordinary ones.
func TestDecodeFast_AgreesWithExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := append(append([]string(nil), frameKeys[:]...), "model", "Stream", "PAYLOAD", "Action", "pK", "Data", "request_ID", `\u0073tream`, "\u017ftream", "p\u212a", "other")
	values := []string{`null`, `1`, `-2.5e3`, `"q"`, `""`, `"日本"`, `true`, `[]`, `{}`, `{"a":1}`, `"\u0041"`, `"x\"y"`, `[1,"pk"]`, `{"stream":"s"}`, `{"pk":2}`}
	key := func() string {
		if rng.IntN(3) > 0 {
			return frameKeys[rng.IntN(len(frameKeys))]
		}
		return keys[rng.IntN(len(keys))]
	}
	object := func(n int, inner func() string) string {
		var b strings.Builder
		b.WriteByte('{')
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%q:%s", key(), inner())
		}
		b.WriteByte('}')
		return strings.ReplaceAll(b.String(), `\\u`, `\u`) // keep escaped keys escaped once
	}
	value := func() string { return values[rng.IntN(len(values))] }
	// usually returns typical, else any value
	usually := func(typical ...string) string {
		if rng.IntN(5) > 0 {
			return typical[rng.IntN(len(typical))]
		}
		return value()
	}
	dataObject := func() string {
		if rng.IntN(3) > 0 {
			return fmt.Sprintf(`{"question_text":%s,"votes":%d}`, usually(`"q"`, `"日本語"`, `"a b"`), rng.IntN(9))
		}
		return object(rng.IntN(3), value)
	}
	fast := 0
	const n = 200000
	for range n {
		var frame string
		if rng.IntN(2) == 0 {
			// Mostly well formed: stream, payload with the usual keys.
			payload := fmt.Sprintf(`{"action":%s,"pk":%s,"data":%s,"request_id":%s}`, usually(`"retrieve"`, `"create"`, `""`), value(), dataObject(), usually(`1`, `"r1"`, `null`))
			if rng.IntN(4) == 0 {
				payload = object(1+rng.IntN(5), value)
			}
			stream := usually(`"questions"`, `"q"`, `"日本"`)
			frame = fmt.Sprintf(`{"stream":%s,"payload":%s}`, stream, payload)
			if rng.IntN(4) == 0 {
				frame = fmt.Sprintf(`{"stream":%s,"payload":%s,%q:%s}`, stream, payload, key(), value())
			}
		} else {
			frame = object(1+rng.IntN(4), func() string {
				if rng.IntN(2) == 0 {
					return object(1+rng.IntN(4), value)
				}
				return value()
			})
		}
		if sameDecode(t, []byte(frame)) {
			fast++
		}
	}
	if fast < n/20 {
		t.Fatalf("the fast path took only %d of %d frames", fast, n)
	}
	t.Logf("the fast path took %d of %d frames", fast, n)
	// The frames clients send take the fast path.
	for _, f := range []string{
		`{"stream":"questions","payload":{"action":"retrieve","pk":1,"request_id":7}}`,
		`{"stream":"questions","payload":{"action":"create","data":{"question_text":"日本語"},"request_id":"a1"}}`,
		`{"stream":"questions","payload":{"action":"list","data":{"page":2}}}`,
	} {
		if !sameDecode(t, []byte(f)) {
			t.Errorf("%s did not take the fast path", f)
		}
	}
	// And the tricky ones do not.
	for _, f := range []string{
		`{"stream":"a","Stream":"b","payload":{"action":"x"}}`,
		`{"stream":"a","\u0053tream":"b","payload":{"action":"x"}}`,
		"{\"stream\":\"a\",\"\u017ftream\":\"b\",\"payload\":{\"action\":\"x\"}}",
		`{"stream":"a","payload":{"action":"x","pk":1,"PK":2}}`,
		`{"stream":"a","payload":{"action":"x"},"payload":{"action":"y"}}`,
	} {
		if _, ok := decodeFast([]byte(f)); ok {
			t.Errorf("%s took the fast path", f)
		}
	}
}

// FuzzDecodeFast checks the same agreement on fuzzed frames:
//
//	go test -run '^$' -fuzz FuzzDecodeFast -fuzztime 60s ./internal/wire/
func FuzzDecodeFast(f *testing.F) {
	f.Add([]byte(`{"stream":"q","payload":{"action":"list","request_id":1}}`))
	f.Add([]byte(`{"stream":"q","payload":{"action":"retrieve","pk":"1","data":{"pk":2}}}`))
	f.Add([]byte(`{"stream":"a","STREAM":"b","payload":{"action":"x"}}`))
	f.Add([]byte("{\"stream\":\"a\",\"\u017ftream\":\"b\",\"payload\":{\"action\":\"x\",\"p\u212a\":1}}"))
	f.Add([]byte("{\"stream\":\"a\xff\",\"payload\":{\"action\":\"x\",\"\xfepk\":1,\"\u0131d\":2}}"))
	f.Fuzz(func(t *testing.T, frame []byte) {
		if bytes.Count(frame, []byte(`"`)) > 64 {
			return
		}
		sameDecode(t, frame)
	})
}
