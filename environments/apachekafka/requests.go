package apachekafka

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Request is one request a node completed, as its request log shows it (Options.RequestLog).
type Request struct {
	Node    int
	API     string // e.g. JOIN_GROUP
	Version int
	Client  string // the client id: kafka-go appends "(github.com/segmentio/kafka-go)"
}

// Requests reads every node's request log: which APIs clients called, in which versions. A
// request the broker refused for its version never completes, so it is not here: see Refused.
func (c *Cluster) Requests() ([]Request, error) {
	if !c.opts.RequestLog {
		return nil, fmt.Errorf("the cluster was started without Options.RequestLog")
	}
	var out []Request
	for _, n := range c.nodes {
		f, err := os.Open(filepath.Join(n.dir, "requests.log"))
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			_, js, ok := strings.Cut(sc.Text(), "Completed request:")
			if !ok {
				continue
			}
			var r struct {
				RequestHeader struct {
					Name     string `json:"requestApiKeyName"`
					Version  int    `json:"requestApiVersion"`
					ClientID string `json:"clientId"`
				} `json:"requestHeader"`
			}
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				continue // a request whose JSON the log truncated
			}
			out = append(out, Request{Node: n.id, API: r.RequestHeader.Name, Version: r.RequestHeader.Version, Client: r.RequestHeader.ClientID})
		}
		_ = f.Close()
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Refused returns the lines of the nodes' server logs where a broker turned a request down
// because it does not support the request's API version (Kafka 4 removed many old versions,
// KIP-896): the broker closes the connection, so the client sees only a broken connection.
func (c *Cluster) Refused() []string {
	var out []string
	for _, n := range c.nodes {
		b, err := os.ReadFile(filepath.Join(n.dir, "server.log"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "UnsupportedVersionException") || strings.Contains(l, "which is not supported") ||
				strings.Contains(l, "Unsupported API version") {
				out = append(out, l)
			}
		}
	}
	return out
}
