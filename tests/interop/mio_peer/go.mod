module muxframe.test/interop/mio_peer

go 1.19

// The Go mio library (github.com/mivinci/mio, commit 2226124, MIT) is not
// vendored here.  Point the build at a local copy of its source with a
// workspace file outside this repository, or with
//   go mod edit -replace github.com/mivinci/mio=/path/to/mio
// (see ../README.md).
require github.com/mivinci/mio v0.0.0-00010101000000-000000000000
