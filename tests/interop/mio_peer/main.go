// Command mio_peer is a real Go mio peer (github.com/mivinci/mio) for interop
// tests with muxframe.  It contains no library code: it imports the library
// and drives it the way an application would.  See ../README.md for how to
// build it.
//
// Modes:
//
//	-mode server -addr 127.0.0.1:0
//	    Listen, print "LISTENING <port>", and serve every TCP connection
//	    as one mio session: every stream the peer opens is echoed (read
//	    until the peer's half-close, writing back what was read, then
//	    CloseWrite).  With -open, also open one stream per -sizes entry
//	    toward the peer on each session and verify its echo.
//
//	-mode client -addr 127.0.0.1:PORT
//	    Dial, open one stream per -sizes entry, write the payload,
//	    CloseWrite, read the echo until EOF and compare.  With -accept N,
//	    also echo N streams the peer opens (after its own streams are done).
//
// Results are printed as "RESULT <stream id> <sent> <received> OK|MISMATCH"
// and a final "ALL OK" or "FAILED"; the exit status is 0 only if all
// matched.  -readlimit sets the library's ReadBufferLimit, the largest data
// frame it accepts (the library's default, 128, when 0); -framesize sets the
// largest frame it sends (default 1024).
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mivinci/mio"
)

var (
	mode        = flag.String("mode", "server", "server or client")
	addr        = flag.String("addr", "127.0.0.1:0", "listen (server) or dial (client) address")
	sizes       = flag.String("sizes", "1,128,1024,1025,100000,1048576", "payload sizes, one stream each")
	seed        = flag.Int("seed", 1, "payload seed")
	readLimit   = flag.Int("readlimit", 0, "ReadBufferLimit (largest accepted data frame); 0 keeps the library default (128)")
	frameSize   = flag.Int("framesize", 0, "FrameSizeLimit (largest sent data frame); 0 keeps the library default (1024)")
	open        = flag.Bool("open", false, "server: also open -sizes streams toward each client and verify their echo")
	accept      = flag.Int("accept", 0, "client: also echo this many streams opened by the server")
	timeout     = flag.Duration("timeout", 30*time.Second, "give up after this long")
	sequential  = flag.Bool("sequential", false, "open and verify streams one after another instead of concurrently")
	exampleEcho = flag.Bool("exampleecho", false, "echo as the library's example server does: io.Copy(str, str); str.Close() (a reset, no half-close)")
)

var outMu sync.Mutex

func say(format string, args ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf(format+"\n", args...)
	os.Stdout.Sync()
}

// payload is SHA-256 in counter mode over "seed:index:counter", the same
// bytes as payload() in tests/test_interop.py and blazeio_peer.py.
func payload(seed, index, size int) []byte {
	out := make([]byte, 0, size+32)
	for counter := 0; len(out) < size; counter++ {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%d:%d:%d", seed, index, counter)))
		out = append(out, sum[:]...)
	}
	return out[:size]
}

func parseSizes() []int {
	var out []int
	for _, s := range strings.Split(*sizes, ",") {
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad size", s)
			os.Exit(2)
		}
		out = append(out, n)
	}
	return out
}

func options() []mio.Option {
	var opts []mio.Option
	if *readLimit > 0 {
		opts = append(opts, mio.WithReadBufferLimit(*readLimit))
	}
	if *frameSize > 0 {
		opts = append(opts, mio.WithFrameSizeLimit(*frameSize))
	}
	// A 1 ms accept timeout refuses streams at random under load; an
	// application that wants every stream raises it.
	opts = append(opts, mio.WithAcceptTimeout(5*time.Second))
	return opts
}

// echo reads until the peer's half-close, writes everything back and
// half-closes.  It never resets: toward muxframe streams end with HFR.
func echo(str mio.Stream) {
	if *exampleEcho {
		n, err := io.Copy(str, str)
		str.Close()
		say("ECHOED %s %d (example: io.Copy, Close) %v", str.LocalAddr(), n, err)
		return
	}
	buf := make([]byte, 64*1024)
	total := 0
	for {
		n, err := str.Read(buf)
		if n > 0 {
			total += n
			// The library queues the slice itself and returns before
			// sending it (io.Writer says it must not retain it): copy.
			chunk := append([]byte(nil), buf[:n]...)
			if _, werr := str.Write(chunk); werr != nil {
				say("ECHO-ERROR %s write: %v", str.LocalAddr(), werr)
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				say("ECHO-ERROR %s read: %v", str.LocalAddr(), err)
				return
			}
			break
		}
	}
	if err := str.CloseWrite(); err != nil {
		say("ECHO-ERROR %s closewrite: %v", str.LocalAddr(), err)
		return
	}
	say("ECHOED %s %d", str.LocalAddr(), total)
}

// verify opens a stream, sends payload(seed, index, size), half-closes and
// checks the echo.
func verify(sess mio.Session, index, size int) bool {
	str, err := sess.Open(context.Background())
	if err != nil {
		say("RESULT open-error %d 0 %v MISMATCH", size, err)
		return false
	}
	data := payload(*seed, index, size)
	werr := make(chan error, 1)
	go func() {
		if _, err := str.Write(data); err != nil {
			werr <- err
			return
		}
		werr <- str.CloseWrite()
	}()
	got, rerr := io.ReadAll(str)
	if err := <-werr; err != nil {
		say("WRITE-ERROR %s %v", str.LocalAddr(), err)
	}
	ok := rerr == nil && string(got) == string(data)
	status := "OK"
	if !ok {
		status = "MISMATCH"
	}
	if rerr != nil {
		say("READ-ERROR %s %v", str.LocalAddr(), rerr)
	}
	say("RESULT %s %d %d %s", str.LocalAddr(), len(data), len(got), status)
	return ok
}

func verifyAll(sess mio.Session, sz []int) bool {
	results := make([]bool, len(sz))
	if *sequential {
		for i, size := range sz {
			results[i] = verify(sess, i, size)
		}
	} else {
		var wg sync.WaitGroup
		for i, size := range sz {
			wg.Add(1)
			go func(i, size int) {
				defer wg.Done()
				results[i] = verify(sess, i, size)
			}(i, size)
		}
		wg.Wait()
	}
	ok := true
	for _, r := range results {
		ok = ok && r
	}
	return ok
}

func finish(ok bool) {
	if ok {
		say("ALL OK")
		os.Exit(0)
	}
	say("FAILED")
	os.Exit(1)
}

func server(sz []int) {
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	say("LISTENING %d", l.Addr().(*net.TCPAddr).Port)
	for {
		conn, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		go func(conn net.Conn) {
			sess := mio.New(conn, options()...)
			go func() {
				for {
					str, err := sess.Accept()
					if err != nil {
						say("SESSION-END %v", err)
						return
					}
					go echo(str)
				}
			}()
			if *open {
				ok := verifyAll(sess, sz)
				if ok {
					say("SERVER-OPENED ALL OK")
				} else {
					say("SERVER-OPENED FAILED")
				}
			}
		}(conn)
	}
}

func client(sz []int) {
	conn, err := net.Dial("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	sess := mio.New(conn, options()...)
	ok := verifyAll(sess, sz)
	if *accept > 0 {
		var wg sync.WaitGroup
		for i := 0; i < *accept; i++ {
			str, err := sess.Accept()
			if err != nil {
				say("ACCEPT-ERROR %v", err)
				ok = false
				break
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				echo(str)
			}()
		}
		wg.Wait()
	}
	// Leave the streams' last frames time to reach the socket: the
	// library's send queue is written by a goroutine.
	time.Sleep(100 * time.Millisecond)
	conn.Close()
	finish(ok)
}

func main() {
	flag.Parse()
	sz := parseSizes()
	time.AfterFunc(*timeout, func() {
		say("TIMEOUT")
		os.Exit(3)
	})
	if *mode == "server" {
		server(sz)
	} else {
		client(sz)
	}
}
