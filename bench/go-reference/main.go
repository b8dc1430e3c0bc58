// Command go-reference is the stand-in for upstream KES in bench/vs-nginx.sh: an HTTPS
// server built only on Go's standard library (net/http and crypto/tls, which upstream
// KES serves with), requiring a client certificate as upstream does, TLS 1.2 at least,
// Go's default suites and curves, keep-alive on. It answers a fixed body of the length
// our server answers, so it does strictly less work per request than upstream (no
// policy, no key store, no crypto, no JSON): our rate divided by its rate is a
// conservative bound on our rate divided by upstream's.
//
//	go-reference -addr 127.0.0.1:17444 -cert server.crt -key server.key -client-ca client.crt \
//	             -generate-len 180 -decrypt-len 60
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:17444", "address to listen on")
	cert := flag.String("cert", "server.crt", "server certificate (PEM)")
	key := flag.String("key", "server.key", "server private key (PEM)")
	clientCA := flag.String("client-ca", "client.crt", "certificates the client's must chain to (PEM)")
	genLen := flag.Int("generate-len", 2, "body length answered under /v1/key/generate/")
	decLen := flag.Int("decrypt-len", 2, "body length answered under /v1/key/decrypt/")
	flag.Parse()

	pem, err := os.ReadFile(*clientCA)
	if err != nil {
		log.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		log.Fatalf("%s: no certificate", *clientCA)
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatal(err)
	}

	body := func(n int) []byte { return []byte(strings.Repeat("a", n)) }
	gen, dec, ok := body(*genLen), body(*decLen), []byte("ok")
	answer := func(b []byte) http.HandlerFunc {
		n := strconv.Itoa(len(b))
		return func(w http.ResponseWriter, r *http.Request) {
			// Read the request body as upstream's handlers do before they answer.
			io.Copy(io.Discard, r.Body)
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Content-Length", n)
			w.WriteHeader(http.StatusOK)
			w.Write(b)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/key/generate/", answer(gen))
	mux.Handle("/v1/key/decrypt/", answer(dec))
	mux.Handle("/", answer(ok))

	srv := &http.Server{
		Addr:    *addr,
		Handler: mux,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{pair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    roots,
		},
		ErrorLog: log.New(io.Discard, "", 0), // a closed benchmark connection is not news
	}
	log.Fatal(srv.ListenAndServeTLS("", ""))
}
