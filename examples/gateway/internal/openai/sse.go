package openai

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// DefaultMaxEventBytes bounds one SSE line and one event's data in a
// StreamReader when no other bound is given.
const DefaultMaxEventBytes = 1 << 20

// SSEWriter writes a streaming response as Server-Sent Events: each event is
// "data: <json>\n\n" and is flushed at once; the stream ends with
// "data: [DONE]\n\n". It is not safe for concurrent use (neither is the
// http.ResponseWriter under it).
type SSEWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf []byte
}

// NewSSEWriter sets the event-stream headers on w (Content-Type
// text/event-stream, Cache-Control no-cache, X-Accel-Buffering no) without
// writing the status, so the caller may still add headers; the first event
// sends 200.
func NewSSEWriter(w http.ResponseWriter) *SSEWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	return &SSEWriter{w: w, rc: http.NewResponseController(w)}
}

// WriteChunk writes one chunk as an event.
func (s *SSEWriter) WriteChunk(c ChatCompletionChunk) error {
	return s.WriteJSON(c)
}

// WriteJSON writes v, encoded as JSON, as one event.
func (s *SSEWriter) WriteJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("openai: encode event: %w", err)
	}
	return s.WriteData(b)
}

// WriteData writes data as one event, unchanged apart from framing: a
// payload holding line breaks (CR, LF or CRLF) is sent as several data
// lines, which a reader joins back with LF. It is the pass-through for
// events read from an upstream.
func (s *SSEWriter) WriteData(data []byte) error {
	s.buf = s.buf[:0]
	for {
		i := bytes.IndexAny(data, "\r\n")
		s.buf = append(s.buf, "data: "...)
		if i < 0 {
			s.buf = append(s.buf, data...)
			s.buf = append(s.buf, '\n')
			break
		}
		s.buf = append(s.buf, data[:i]...)
		s.buf = append(s.buf, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	s.buf = append(s.buf, '\n')
	return s.send()
}

// WriteDone writes the final "data: [DONE]" event.
func (s *SSEWriter) WriteDone() error {
	s.buf = append(s.buf[:0], "data: [DONE]\n\n"...)
	return s.send()
}

// WriteComment writes an SSE comment line (": text"), which clients ignore;
// use it as a keep-alive.
func (s *SSEWriter) WriteComment(text string) error {
	s.buf = append(s.buf[:0], ": "...)
	for i := 0; i < len(text); i++ {
		if c := text[i]; c != '\r' && c != '\n' {
			s.buf = append(s.buf, c)
		}
	}
	s.buf = append(s.buf, "\n\n"...)
	return s.send()
}

func (s *SSEWriter) send() error {
	if _, err := s.w.Write(s.buf); err != nil {
		return fmt.Errorf("openai: write event: %w", err)
	}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("openai: flush event: %w", err)
	}
	return nil
}

// StreamEvent is one event read by a StreamReader: a chunk, or the final
// [DONE] marker.
type StreamEvent struct {
	// Data is the event's data exactly as received (after SSE unframing),
	// for forwarding with SSEWriter.WriteData. It is a fresh copy.
	Data []byte
	// Chunk is Data decoded; zero when Done.
	Chunk ChatCompletionChunk
	// Done marks the "[DONE]" event; Next returns io.EOF after it.
	Done bool
}

// UpstreamError is an error event inside an upstream stream
// (data: {"error": {...}}), or an error body parsed by ParseErrorResponse.
type UpstreamError struct{ Err Error }

func (e *UpstreamError) Error() string { return "openai: upstream error: " + e.Err.Message }

// Unwrap returns ErrUpstream.
func (e *UpstreamError) Unwrap() error { return ErrUpstream }

// StreamReader parses an upstream chat completion stream (Server-Sent
// Events, as OpenAI-compatible servers send) into chunks, and remembers the
// usage of the last chunk that carried one, so that a proxied stream can be
// metered. Line endings may be LF, CRLF or CR; comment lines and fields
// other than data are ignored; an event's data lines are joined with LF.
// It is not safe for concurrent use.
//
// The reader has no context of its own: read from a response body whose
// request carries the context, and cancelling it ends the stream.
type StreamReader struct {
	r            *bufio.Reader
	max          int
	line         []byte
	data         []byte
	hasData      bool
	skipLF       bool
	eof          bool
	err          error // sticky
	usage        Usage
	hasUsage     bool
	contentBytes int64
}

// NewStreamReader reads events from r. maxEventBytes bounds a line and an
// event's data; 0 means DefaultMaxEventBytes.
func NewStreamReader(r io.Reader, maxEventBytes int) *StreamReader {
	if maxEventBytes <= 0 {
		maxEventBytes = DefaultMaxEventBytes
	}
	return &StreamReader{r: bufio.NewReaderSize(r, 16<<10), max: maxEventBytes}
}

// Next returns the next event. After the [DONE] event it returns io.EOF; a
// stream that ends without [DONE] gives io.ErrUnexpectedEOF (after any
// complete event still pending). Other errors: ErrMalformedChunk (data that
// is not a chunk), ErrEventTooLarge, ErrInvalidUsage, *UpstreamError for an
// error event, or the underlying read error. Errors are sticky.
func (s *StreamReader) Next() (StreamEvent, error) {
	if s.err != nil {
		return StreamEvent{}, s.err
	}
	ev, err := s.next()
	if err != nil {
		s.err = err
	}
	return ev, err
}

// Usage returns the usage of the last chunk that carried one.
func (s *StreamReader) Usage() (Usage, bool) { return s.usage, s.hasUsage }

// ContentBytes returns the total bytes of generated text in the deltas seen
// so far (Delta.OutputBytes: content, refusal, reasoning, tool calls), the
// measure of an answer whose usage an upstream does not send.
func (s *StreamReader) ContentBytes() int64 { return s.contentBytes }

func (s *StreamReader) next() (StreamEvent, error) {
	for {
		if s.eof {
			return StreamEvent{}, io.ErrUnexpectedEOF
		}
		line, err := s.readLine()
		if errors.Is(err, io.EOF) {
			s.eof = true
			if ev, ok, err := s.dispatch(); ok || err != nil {
				return ev, err
			}
			return StreamEvent{}, io.ErrUnexpectedEOF
		}
		if err != nil {
			return StreamEvent{}, err
		}
		if len(line) == 0 {
			if ev, ok, err := s.dispatch(); ok || err != nil {
				return ev, err
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		if string(field) != "data" {
			continue
		}
		if s.hasData {
			s.data = append(s.data, '\n')
		}
		if len(s.data)+len(value) > s.max {
			return StreamEvent{}, ErrEventTooLarge
		}
		s.data = append(s.data, value...)
		s.hasData = true
	}
}

// readLine returns the next line without its terminator (LF, CRLF or CR),
// or io.EOF when no bytes are left. The slice is reused by the next call.
func (s *StreamReader) readLine() ([]byte, error) {
	s.line = s.line[:0]
	for {
		if _, err := s.r.Peek(1); err != nil {
			if errors.Is(err, io.EOF) && len(s.line) > 0 {
				return s.line, nil
			}
			return nil, err
		}
		buf, _ := s.r.Peek(s.r.Buffered())
		if s.skipLF {
			s.skipLF = false
			if buf[0] == '\n' {
				_, _ = s.r.Discard(1)
				continue
			}
		}
		i := bytes.IndexAny(buf, "\r\n")
		n := i
		if i < 0 {
			n = len(buf)
		}
		if len(s.line)+n > s.max {
			return nil, ErrEventTooLarge
		}
		s.line = append(s.line, buf[:n]...)
		if i < 0 {
			_, _ = s.r.Discard(n)
			continue
		}
		s.skipLF = buf[i] == '\r'
		_, _ = s.r.Discard(i + 1)
		return s.line, nil
	}
}

// wireChunk is a chunk or an error event.
type wireChunk struct {
	ChatCompletionChunk
	Error *wireError `json:"error"`
}

// wireError is an upstream error object; servers differ on whether code is
// a string or a number.
type wireError struct {
	Message string          `json:"message"`
	Type    string          `json:"type"`
	Code    json.RawMessage `json:"code"`
	Param   json.RawMessage `json:"param"`
}

func (w *wireError) toError() Error {
	return Error{Message: w.Message, Type: w.Type, Code: rawText(w.Code), Param: rawText(w.Param)}
}

// rawText returns a JSON string's value, or a scalar's literal text, or "".
func rawText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	if raw[0] == '{' || raw[0] == '[' {
		return ""
	}
	return truncate(string(raw), 64)
}

// dispatch ends the pending event; ok is false when it had no data.
func (s *StreamReader) dispatch() (ev StreamEvent, ok bool, err error) {
	data := bytes.TrimSpace(s.data)
	had := s.hasData
	s.data, s.hasData = s.data[:0], false
	if !had || len(data) == 0 {
		return StreamEvent{}, false, nil
	}
	if string(data) == "[DONE]" {
		s.err = io.EOF
		return StreamEvent{Data: []byte("[DONE]"), Done: true}, true, nil
	}
	var w wireChunk
	if err := json.Unmarshal(data, &w); err != nil {
		return StreamEvent{}, false, fmt.Errorf("%w: %v", ErrMalformedChunk, err)
	}
	if w.Error != nil {
		return StreamEvent{}, false, &UpstreamError{Err: w.Error.toError()}
	}
	if w.Object != "" && w.Object != ObjectChatCompletionChunk {
		return StreamEvent{}, false, fmt.Errorf("%w: object is %q", ErrMalformedChunk, truncate(w.Object, 64))
	}
	if w.Usage != nil {
		if err := w.Usage.check(); err != nil {
			return StreamEvent{}, false, err
		}
		s.usage, s.hasUsage = *w.Usage, true
	}
	for _, c := range w.Choices {
		s.contentBytes += c.Delta.OutputBytes()
	}
	return StreamEvent{Data: bytes.Clone(data), Chunk: w.ChatCompletionChunk}, true, nil
}

// ParseErrorResponse decodes an upstream error body ({"error": {...}}),
// accepting a string or numeric code. ok is false when body is not one.
func ParseErrorResponse(body []byte) (e Error, ok bool) {
	var w struct {
		Error *wireError `json:"error"`
	}
	if json.Unmarshal(body, &w) != nil || w.Error == nil {
		return Error{}, false
	}
	return w.Error.toError(), true
}
