// Package follow is the read loop of a compacted topic: a Follower reads every partition
// from its first offset, is ready once it has reached the end the log had at start, then
// follows new records, handing each to one apply function; Scan reads a snapshot once.
// Its invariant: a partition's position moves forward only over records applied or
// counted as poison by the apply function, over offsets that hold no record, or past a
// log start that retention or DeleteRecords moved (counted). The throttle Table is
// built on it; services follow their other small compacted topics with it.
package follow
