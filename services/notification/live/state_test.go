package live

import "testing"

// TestTransitions is the connection's whole transition table: every state
// with every event.
func TestTransitions(t *testing.T) {
	t.Parallel()
	type row struct {
		from state
		ev   event
		to   state
		act  action
	}
	var (
		snapshot, idle, writing = stateSnapshot, stateIdle, stateWriting
		closing, answering      = stateClosing, stateAnswering
		closed, gone            = stateClosed, stateGone
	)
	rows := []row{
		// The request's goroutine is the writer while it sends the
		// snapshot; what comes meanwhile waits for it.
		{snapshot, evQueue, snapshot, actNone},
		{snapshot, evClose, closing, actNone},
		{snapshot, evReaderDone, snapshot, actDrop},
		{snapshot, evLive, writing, actNone},
		{snapshot, evPing, snapshot, actDrop},
		{snapshot, evNext, snapshot, actDrop},
		{snapshot, evEmpty, snapshot, actDrop},
		{snapshot, evAbort, gone, actCut},

		// No writer: whatever leaves idle must provide one.
		{idle, evQueue, writing, actWake},
		{idle, evClose, closing, actWake},
		{idle, evReaderDone, idle, actDrop},
		{idle, evLive, idle, actDrop},
		{idle, evPing, writing, actWake},
		{idle, evNext, idle, actDrop},
		{idle, evEmpty, idle, actNone},
		{idle, evAbort, gone, actCut},

		// A writer is running: nobody else starts one, and a ping is
		// not needed.
		{writing, evQueue, writing, actNone},
		{writing, evClose, closing, actNone},
		{writing, evReaderDone, writing, actDrop},
		{writing, evLive, writing, actDrop},
		{writing, evPing, writing, actDrop},
		{writing, evNext, writing, actNone},
		{writing, evEmpty, idle, actNone},
		{writing, evAbort, gone, actCut},

		// The first close stands; the writer (the snapshot's sender, if
		// that is still going) sends it and waits for the answer.
		{closing, evQueue, closing, actDrop},
		{closing, evClose, closing, actDrop},
		{closing, evReaderDone, answering, actNone},
		{closing, evLive, closing, actNone},
		{closing, evPing, closing, actDrop},
		{closing, evNext, closed, actClose},
		{closing, evEmpty, closed, actClose},
		{closing, evAbort, gone, actCut},

		// The reader is done: no answer will come, so the writer cuts
		// the connection after the close.
		{answering, evQueue, answering, actDrop},
		{answering, evClose, answering, actDrop},
		{answering, evReaderDone, answering, actDrop},
		{answering, evLive, answering, actNone},
		{answering, evPing, answering, actDrop},
		{answering, evNext, closed, actCloseCut},
		{answering, evEmpty, closed, actCloseCut},
		{answering, evAbort, gone, actCut},

		// The close went out: only the reader's end matters now.
		{closed, evQueue, closed, actDrop},
		{closed, evClose, closed, actDrop},
		{closed, evReaderDone, closed, actCut},
		{closed, evLive, closed, actDrop},
		{closed, evPing, closed, actDrop},
		{closed, evNext, closed, actDrop},
		{closed, evEmpty, closed, actDrop},
		{closed, evAbort, gone, actCut},

		{gone, evQueue, gone, actDrop},
		{gone, evClose, gone, actDrop},
		{gone, evReaderDone, gone, actDrop},
		{gone, evLive, gone, actDrop},
		{gone, evPing, gone, actDrop},
		{gone, evNext, gone, actDrop},
		{gone, evEmpty, gone, actDrop},
		{gone, evAbort, gone, actDrop},
	}
	seen := map[[2]uint8]bool{}
	for _, r := range rows {
		key := [2]uint8{uint8(r.from), uint8(r.ev)}
		if seen[key] {
			t.Errorf("%v on %v is in the table twice", r.from, r.ev)
		}
		seen[key] = true
		to, act := transition(r.from, r.ev)
		if to != r.to || act != r.act {
			t.Errorf("%v on %v: got %v, %v; want %v, %v", r.from, r.ev, to, act, r.to, r.act)
		}
		if r.act == actDrop && r.to != r.from {
			t.Errorf("%v on %v: the table drops the event but changes the state", r.from, r.ev)
		}
	}
	if want := len(stateNames) * len(eventNames); len(seen) != want {
		t.Errorf("the table has %d of the %d pairs of state and event", len(seen), want)
	}
}

// TestWriterRole checks, over every transition, the rules the table exists
// for: a writer is provided exactly when a connection leaves idle, only the
// writer gives its role up, and a close, once asked for, is never undone.
func TestWriterRole(t *testing.T) {
	t.Parallel()
	for from := range state(len(stateNames)) {
		for ev := range event(len(eventNames)) {
			to, act := transition(from, ev)
			leavesIdle := from == stateIdle && to != stateIdle && to != stateGone
			if leavesIdle != (act == actWake) {
				t.Errorf("%v on %v → %v, %v: a writer must be provided exactly when leaving idle", from, ev, to, act)
			}
			if to == stateIdle && from != stateIdle && (from != stateWriting || ev != evEmpty) {
				t.Errorf("%v on %v → idle: only the writer, finding the queue empty, gives its role up", from, ev)
			}
			if from.closing() && !to.closing() {
				t.Errorf("%v on %v → %v: a close was undone", from, ev, to)
			}
			if from.over() && !to.over() {
				t.Errorf("%v on %v → %v: writing again after the close", from, ev, to)
			}
			if (act == actClose || act == actCloseCut) != (to == stateClosed && from != stateClosed) {
				t.Errorf("%v on %v → %v, %v: the close is written once, on entering closed", from, ev, to, act)
			}
		}
	}
}

// TestLifecycles runs the sequences a connection goes through.
func TestLifecycles(t *testing.T) {
	t.Parallel()
	type step struct {
		ev  event
		to  state
		act action
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a change during the snapshot is sent after it, then a later one wakes a writer", []step{
			{evQueue, stateSnapshot, actNone},
			{evLive, stateWriting, actNone},
			{evNext, stateWriting, actNone},
			{evEmpty, stateIdle, actNone},
			{evQueue, stateWriting, actWake},
			{evQueue, stateWriting, actNone},
			{evNext, stateWriting, actNone},
			{evNext, stateWriting, actNone},
			{evEmpty, stateIdle, actNone},
		}},
		{"an idle connection is pinged; a ping worker is its writer meanwhile", []step{
			{evLive, stateWriting, actNone},
			{evEmpty, stateIdle, actNone},
			{evPing, stateWriting, actWake},
			{evPing, stateWriting, actDrop},
			{evQueue, stateWriting, actNone},
			{evNext, stateWriting, actNone},
			{evEmpty, stateIdle, actNone},
		}},
		{"a terminal status in the snapshot: the close follows it, and the client answers", []step{
			{evClose, stateClosing, actNone},
			{evQueue, stateClosing, actDrop},
			{evLive, stateClosing, actNone},
			{evEmpty, stateClosed, actClose},
			{evClose, stateClosed, actDrop},
			{evReaderDone, stateClosed, actCut},
			{evAbort, stateGone, actCut},
		}},
		{"the client closes an idle connection: the answer, then the cut", []step{
			{evLive, stateWriting, actNone},
			{evEmpty, stateIdle, actNone},
			{evClose, stateClosing, actWake},
			{evReaderDone, stateAnswering, actNone},
			{evEmpty, stateClosed, actCloseCut},
			{evAbort, stateGone, actCut},
		}},
		{"shutdown while writing to a slow client, which then closes first", []step{
			{evLive, stateWriting, actNone},
			{evClose, stateClosing, actNone},
			{evClose, stateClosing, actDrop}, // the reader's code does not replace shutdown's
			{evReaderDone, stateAnswering, actNone},
			{evNext, stateClosed, actCloseCut},
			{evAbort, stateGone, actCut},
		}},
		{"cut during the snapshot", []step{
			{evAbort, stateGone, actCut},
			{evLive, stateGone, actDrop},
			{evEmpty, stateGone, actDrop},
			{evAbort, stateGone, actDrop},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var s state // a new conn
			for i, st := range tt.steps {
				from := s
				var act action
				s, act = transition(s, st.ev)
				if s != st.to || act != st.act {
					t.Fatalf("step %d, %v on %v: got %v, %v; want %v, %v", i, from, st.ev, s, act, st.to, st.act)
				}
			}
		})
	}
}
