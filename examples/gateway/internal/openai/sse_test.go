package openai

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
)

func TestSSEWriter(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Length", "5")
	s := NewSSEWriter(rec)
	rec.Header().Set("X-Ratelimit-Limit-Requests", "60") // still settable before the first event
	chunk := ChatCompletionChunk{ID: "c1", Object: ObjectChatCompletionChunk, Created: 1, Model: "m",
		Choices: []ChunkChoice{{Delta: Delta{Role: RoleAssistant}}}}
	if err := s.WriteChunk(chunk); err != nil {
		t.Fatal(err)
	}
	u := NewUsage(3, 4)
	if err := s.WriteChunk(ChatCompletionChunk{ID: "c1", Object: ObjectChatCompletionChunk, Model: "m", Usage: &u}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteData([]byte("a\nb\r\nc\rd")); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteComment("keep\nalive"); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteDone(); err != nil {
		t.Fatal(err)
	}
	want := `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}` + "\n\n" +
		`data: {"id":"c1","object":"chat.completion.chunk","created":0,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}` + "\n\n" +
		"data: a\ndata: b\ndata: c\ndata: d\n\n" +
		": keepalive\n\n" +
		"data: [DONE]\n\n"
	if got := rec.Body.String(); got != want {
		t.Errorf("body:\n%s\nwant:\n%s", got, want)
	}
	h := rec.Result().Header
	if h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache" || h.Get("Content-Length") != "" || h.Get("X-Ratelimit-Limit-Requests") != "60" {
		t.Errorf("headers %v", h)
	}
	if !rec.Flushed {
		t.Error("not flushed")
	}
}

type failWriter struct{ *httptest.ResponseRecorder }

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestSSEWriterError(t *testing.T) {
	s := NewSSEWriter(failWriter{httptest.NewRecorder()})
	if err := s.WriteDone(); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("err = %v", err)
	}
}

// stream is an OpenAI-style stream with CRLF endings, comments, an id field
// and multi-line data.
const stream = ": ping\r\n" +
	"id: 1\r\n" +
	`data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\r\n\r\n" +
	`data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}` + "\r\n\r\n" +
	"data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\r\n" +
	"data: \"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\r\n\r\n" +
	`data:{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}` + "\r\n\r\n" +
	"data: [DONE]\r\n\r\n" +
	"data: {not read}\r\n\r\n"

func readAll(t *testing.T, r *StreamReader) (text string, events int, err error) {
	t.Helper()
	for {
		ev, err := r.Next()
		if err != nil {
			return text, events, err
		}
		events++
		for _, c := range ev.Chunk.Choices {
			text += c.Delta.Content
		}
		if ev.Done && string(ev.Data) != "[DONE]" {
			t.Fatalf("done data %q", ev.Data)
		}
	}
}

func TestStreamReader(t *testing.T) {
	variants := map[string]string{
		"crlf":     stream,
		"lf":       strings.ReplaceAll(stream, "\r\n", "\n"),
		"cr":       strings.ReplaceAll(stream, "\r\n", "\r"),
		"no blank": stream[:strings.Index(stream, "data: [DONE]")] + "data: [DONE]",
	}
	for name, s := range variants {
		for _, rd := range []struct {
			name string
			r    io.Reader
		}{{"whole", strings.NewReader(s)}, {"bytewise", iotest.OneByteReader(strings.NewReader(s))}, {"halves", iotest.HalfReader(strings.NewReader(s))}} {
			t.Run(name+"/"+rd.name, func(t *testing.T) {
				r := NewStreamReader(rd.r, 0)
				text, events, err := readAll(t, r)
				if err != io.EOF {
					t.Fatalf("err = %v", err)
				}
				if text != "Hello" || events != 5 {
					t.Errorf("text %q events %d", text, events)
				}
				if u, ok := r.Usage(); !ok || !sameUsage(u, Usage{PromptTokens: 5, CompletionTokens: 2, TotalTokens: 7}) {
					t.Errorf("usage %+v %v", u, ok)
				}
				if r.ContentBytes() != 5 {
					t.Errorf("content bytes %d", r.ContentBytes())
				}
				if _, err := r.Next(); err != io.EOF {
					t.Errorf("after done: %v", err)
				}
			})
		}
	}
}

func TestStreamReaderErrors(t *testing.T) {
	chunk := `data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a"}}]}` + "\n\n"
	tests := []struct {
		name   string
		in     string
		max    int
		events int
		want   error
	}{
		{name: "truncated", in: chunk, events: 1, want: io.ErrUnexpectedEOF},
		{name: "truncated mid event", in: chunk + `data: {"object":"chat.completion.chunk","choices":[]}`, events: 2, want: io.ErrUnexpectedEOF},
		{name: "empty", in: "", want: io.ErrUnexpectedEOF},
		{name: "malformed", in: "data: {nope\n\n", want: ErrMalformedChunk},
		{name: "wrong object", in: `data: {"object":"chat.completion"}` + "\n\n", want: ErrMalformedChunk},
		{name: "array", in: "data: [1]\n\n", want: ErrMalformedChunk},
		{name: "negative usage", in: `data: {"choices":[],"usage":{"prompt_tokens":-1}}` + "\n\n", want: ErrInvalidUsage},
		{name: "error event", in: chunk + `data: {"error":{"message":"boom","type":"server_error","code":500}}` + "\n\n", events: 1, want: ErrUpstream},
		{name: "line too long", in: "data: " + strings.Repeat("x", 100) + "\n\n", max: 50, want: ErrEventTooLarge},
		{name: "event too long", in: strings.Repeat("data: xxxxxxxxxx\n", 10) + "\n", max: 50, want: ErrEventTooLarge},
		{name: "blank data skipped", in: "data:\n\ndata: \n\n" + chunk + "data: [DONE]\n\n", events: 2, want: io.EOF},
		{name: "other fields ignored", in: "event: message\nretry: 5\nfoo\n\n" + chunk + "data: [DONE]\n\n", events: 2, want: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewStreamReader(strings.NewReader(tt.in), tt.max)
			var events int
			var err error
			for {
				if _, err = r.Next(); err != nil {
					break
				}
				events++
			}
			if !errors.Is(err, tt.want) || events != tt.events {
				t.Fatalf("err = %v after %d events, want %v after %d", err, events, tt.want, tt.events)
			}
			if _, again := r.Next(); !errors.Is(again, tt.want) {
				t.Errorf("error not sticky: %v", again)
			}
		})
	}
	r := NewStreamReader(strings.NewReader(`data: {"error":{"message":"boom","type":"server_error","code":500,"param":"x"}}`+"\n\n"), 0)
	_, err := r.Next()
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.Err != (Error{Message: "boom", Type: "server_error", Code: "500", Param: "x"}) {
		t.Fatalf("err = %#v", err)
	}
}

// TestStreamRoundTrip proves that what SSEWriter writes, StreamReader reads
// back unchanged, including data with line breaks.
func TestStreamRoundTrip(t *testing.T) {
	rec := httptest.NewRecorder()
	w := NewSSEWriter(rec)
	var want []string
	for i, s := range []string{"plain", "two\nlines", "crlf\r\nend", "trailing\n", "ünïcode ✓"} {
		c := ChatCompletionChunk{ID: "x", Object: ObjectChatCompletionChunk, Choices: []ChunkChoice{{Index: i, Delta: Delta{Content: s}}}}
		if err := w.WriteChunk(c); err != nil {
			t.Fatal(err)
		}
		want = append(want, s)
	}
	raw := []byte(`{"object":"chat.completion.chunk","choices":[],` + "\n" + `"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`)
	if err := w.WriteData(raw); err != nil {
		t.Fatal(err)
	}
	_ = w.WriteDone()

	r := NewStreamReader(bytes.NewReader(rec.Body.Bytes()), 0)
	for i, s := range want {
		ev, err := r.Next()
		if err != nil || ev.Chunk.Choices[0].Delta.Content != s {
			t.Fatalf("event %d: %+v %v", i, ev, err)
		}
	}
	ev, err := r.Next()
	if err != nil || !bytes.Equal(ev.Data, raw) {
		t.Fatalf("raw event %q %v", ev.Data, err)
	}
	if ev, err := r.Next(); err != nil || !ev.Done {
		t.Fatalf("done %+v %v", ev, err)
	}
	if u, ok := r.Usage(); !ok || u.TotalTokens != 3 {
		t.Fatalf("usage %+v", u)
	}
}

func FuzzStreamReader(f *testing.F) {
	f.Add([]byte(stream), 0)
	f.Add([]byte("data: [DONE]\n\n"), 0)
	f.Add([]byte(`data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":12},"completion_tokens_details":{"reasoning_tokens":-3}}}`+"\n\ndata: [DONE]\n\n"), 0)
	f.Add([]byte("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\rdata: [DONE]\r"), 64)
	f.Add([]byte(`data: {"error":{"message":"x","code":[1]}}`+"\n\n"), 0)
	f.Add([]byte(`data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\""}}],"reasoning_content":"r"}}]}`+"\n\ndata: [DONE]\n\n"), 0)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 0 || max > 1<<16 {
			max = 0
		}
		r := NewStreamReader(bytes.NewReader(in), max)
		var sum int64
		for i := 0; ; i++ {
			ev, err := r.Next()
			if err != nil {
				if i > len(in) {
					t.Fatalf("%d events from %d bytes", i, len(in))
				}
				break
			}
			if limit := max; limit > 0 && len(ev.Data) > limit {
				t.Fatalf("event of %d bytes exceeds bound %d", len(ev.Data), limit)
			}
			if !ev.Done && !json.Valid(ev.Data) {
				t.Fatalf("invalid JSON event %q", ev.Data)
			}
			for _, c := range ev.Chunk.Choices {
				sum += c.Delta.OutputBytes()
			}
		}
		if u, ok := r.Usage(); ok && (u.PromptTokens < 0 || u.CompletionTokens < 0 || u.TotalTokens < 0) {
			t.Fatalf("negative usage %+v", u)
		}
		if sum != r.ContentBytes() {
			t.Fatalf("content bytes %d, counted %d", r.ContentBytes(), sum)
		}
	})
}

func TestParseErrorResponse(t *testing.T) {
	tests := []struct {
		body string
		want Error
		ok   bool
	}{
		{`{"error":{"message":"m","type":"t","code":"c","param":null}}`, Error{Message: "m", Type: "t", Code: "c"}, true},
		{`{"error":{"message":"m","code":429}}`, Error{Message: "m", Code: "429"}, true},
		{`{"error":{"message":"m","code":{"x":1}}}`, Error{Message: "m"}, true},
		{`{"detail":"vllm style"}`, Error{}, false},
		{`nope`, Error{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseErrorResponse([]byte(tt.body))
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: %+v %v", tt.body, got, ok)
		}
	}
}

// benchStream is a 100-token stream as an upstream sends it.
func benchStream() []byte {
	var b bytes.Buffer
	for i := range 100 {
		c := ChatCompletionChunk{ID: "chatcmpl-0123456789", Object: ObjectChatCompletionChunk, Created: 1750000000, Model: "llama-3.1-8b",
			Choices: []ChunkChoice{{Index: 0, Delta: Delta{Content: " word"}}}}
		if i == 0 {
			c.Choices[0].Delta.Role = RoleAssistant
		}
		j, _ := json.Marshal(c)
		b.WriteString("data: ")
		b.Write(j)
		b.WriteString("\n\n")
	}
	u := NewUsage(50, 100)
	j, _ := json.Marshal(ChatCompletionChunk{ID: "chatcmpl-0123456789", Object: ObjectChatCompletionChunk, Usage: &u})
	b.WriteString("data: ")
	b.Write(j)
	b.WriteString("\n\ndata: [DONE]\n\n")
	return b.Bytes()
}

// BenchmarkStreamReader parses a 100-chunk upstream stream and captures its
// usage.
func BenchmarkStreamReader(b *testing.B) {
	in := benchStream()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		r := NewStreamReader(bytes.NewReader(in), 0)
		for {
			if _, err := r.Next(); err != nil {
				break
			}
		}
		if u, ok := r.Usage(); !ok || u.CompletionTokens != 100 {
			b.Fatal("no usage")
		}
	}
}

// BenchmarkStreamReaderNaiveScanner is what a proxy usually writes: a
// bufio.Scanner over lines, "data: " stripped, one json.Unmarshal per line.
// It handles neither CR line endings, multi-line data, comments nor long
// events beyond the scanner's buffer.
func BenchmarkStreamReaderNaiveScanner(b *testing.B) {
	in := benchStream()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		sc := bufio.NewScanner(bytes.NewReader(in))
		var usage *Usage
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok || line == "[DONE]" {
				continue
			}
			var c ChatCompletionChunk
			if err := json.Unmarshal([]byte(line), &c); err != nil {
				b.Fatal(err)
			}
			if c.Usage != nil {
				usage = c.Usage
			}
		}
		if usage == nil || usage.CompletionTokens != 100 {
			b.Fatal("no usage")
		}
	}
}
