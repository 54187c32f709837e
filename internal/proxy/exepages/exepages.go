// Package exepages releases the pages of the running executable that
// start-up left resident.
//
// Package initialisation touches code and read-only data all over the
// binary (every package's init, every protobuf descriptor linked in), and
// the kernel maps file pages in 64 KiB blocks around each one touched
// (fault-around). For weft proxy that is about 20 MB of the 42 MB weft
// binary resident after start-up, of which it then uses about 6 MB. These
// pages are clean and shared: releasing them costs the process nothing
// but a minor fault (no I/O, the page cache keeps them) for each one it
// touches again, and makes its resident set what it actually uses.
package exepages
