package live

// A connection's life is a small state machine, kept under conn.mu and
// changed only through conn.fire. Its main job is the writer role: at most
// one goroutine may write to a client at a time, yet an idle WebSocket
// keeps no goroutine waiting to write (see the package comment), so the
// role passes from the goroutine that serves the request (which sends the
// snapshot) to writer goroutines started on demand, and to the ping
// workers. Whoever makes the state leave idle is told to provide the
// writer (actWake); the writer gives the role up when it finds the queue
// empty (back to idle), and after the close nobody writes again.
//
//	snapshot ──evLive──▶ writing ◀──evQueue, evPing (wake)── idle
//	writing ──evEmpty──▶ idle
//	snapshot, writing ──evClose──▶ closing ◀──evClose (wake)── idle
//	closing ──evReaderDone──▶ answering
//	closing ──the writer's evNext or evEmpty (close)──▶ closed
//	answering ──the writer's evNext or evEmpty (closeCut)──▶ closed
//	closed ──evReaderDone (cut)──▶ closed, and abort fires evAbort
//	every state but gone ──evAbort (cut)──▶ gone
//
// Anything else leaves the state as it is. transition is the whole table;
// state_test.go spells it out.

// state is where a connection is in its life. The order matters: every
// state from stateClosing on is closing (nothing new is queued), and every
// state from stateClosed on writes nothing more.
type state uint8

const (
	// stateSnapshot: the goroutine serving the request is sending the
	// snapshot, and is the writer until it is out: what is offered
	// meanwhile waits in the queue. A new conn starts here.
	stateSnapshot state = iota
	// stateIdle: nothing is queued and, for a WebSocket, no goroutine is
	// waiting to write; an event stream's request goroutine waits for a
	// kick.
	stateIdle
	// stateWriting: one writer is emptying the queue (or writing a ping).
	stateWriting
	// stateClosing: a close was asked for and the queue dropped; the
	// writer sends the close next, then half-closes and gives the reader
	// CloseWait to receive the client's answer.
	stateClosing
	// stateAnswering: as stateClosing, but the reader has stopped (the
	// client closed first, or broke the protocol): no answer will be
	// read, so the writer cuts the connection right after the close.
	stateAnswering
	// stateClosed: the writer has taken the close; nothing else is
	// written. The reader's end (the client's answer, or CloseWait
	// passing) cuts the connection.
	stateClosed
	// stateGone: cut and removed from the hub.
	stateGone
)

var stateNames = [...]string{"snapshot", "idle", "writing", "closing", "answering", "closed", "gone"}

func (s state) String() string { return stateNames[s] }

// closing reports whether a close was asked for (or the connection is cut):
// nothing is queued any more.
func (s state) closing() bool { return s >= stateClosing }

// over reports whether nothing more will be written.
func (s state) over() bool { return s >= stateClosed }

// event is what happens to a connection.
type event uint8

const (
	// evQueue: offer queued something to send.
	evQueue event = iota
	// evClose: a close was asked for (by a terminal status, a full queue,
	// shutdown, a failed snapshot or the reader).
	evClose
	// evReaderDone: a WebSocket's reader stopped, having asked for its
	// close with evClose first.
	evReaderDone
	// evLive: the snapshot is out; its sender goes on as the writer.
	evLive
	// evPing: a ping worker found the connection due for a heartbeat.
	evPing
	// evNext: the writer takes the next queued item.
	evNext
	// evEmpty: the writer found the queue empty.
	evEmpty
	// evAbort: the connection is cut.
	evAbort
)

var eventNames = [...]string{"queue", "close", "readerDone", "live", "ping", "next", "empty", "abort"}

func (e event) String() string { return eventNames[e] }

// action is what the goroutine that fired an event must do next.
type action uint8

const (
	// actNone: nothing beyond what the event itself does (queue the item,
	// set the close code, take the item).
	actNone action = iota
	// actDrop: the event does not apply in this state: nothing changes,
	// and what it brought (an item, a close code, a ping) is dropped.
	actDrop
	// actWake: the connection left idle and needs a writer: start one (a
	// goroutine for a WebSocket, a kick for an event stream), or be it (a
	// ping worker).
	actWake
	// actClose: write the close frame, then half-close and wait for the
	// client's answer.
	actClose
	// actCloseCut: write the close frame, then cut the connection.
	actCloseCut
	// actCut: cut the connection now.
	actCut
)

var actionNames = [...]string{"none", "drop", "wake", "close", "closeCut", "cut"}

func (a action) String() string { return actionNames[a] }

// transition returns the state after e in s, and what the caller must do.
// Anything not listed is actDrop and leaves s as it is.
func transition(s state, e event) (state, action) {
	if e == evAbort {
		if s == stateGone {
			return s, actDrop
		}
		return stateGone, actCut
	}
	switch s {
	case stateSnapshot:
		switch e {
		case evQueue:
			return s, actNone // its sender sends it after the snapshot
		case evClose:
			return stateClosing, actNone // its sender stops and sends the close
		case evLive:
			return stateWriting, actNone
		}
	case stateIdle:
		switch e {
		case evQueue, evPing:
			return stateWriting, actWake
		case evClose:
			return stateClosing, actWake
		case evEmpty:
			// An event stream's goroutine looks at the queue after
			// every wake-up, a keep-alive tick included.
			return s, actNone
		}
	case stateWriting:
		switch e {
		case evQueue, evNext:
			return s, actNone
		case evClose:
			return stateClosing, actNone // the running writer sends it next
		case evEmpty:
			return stateIdle, actNone
		}
	case stateClosing:
		switch e {
		case evReaderDone:
			return stateAnswering, actNone
		case evLive:
			return s, actNone // the snapshot's sender goes on to send the close
		case evNext, evEmpty:
			return stateClosed, actClose
		}
	case stateAnswering:
		switch e {
		case evLive:
			return s, actNone
		case evNext, evEmpty:
			return stateClosed, actCloseCut
		}
	case stateClosed:
		if e == evReaderDone {
			// The client's answer to our close (or silence for
			// CloseWait): the handshake is over.
			return s, actCut
		}
	}
	return s, actDrop
}
