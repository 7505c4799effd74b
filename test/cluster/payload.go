// Package cluster is make test-cluster: the operator as it ships (its images, make deploy) on
// the real single-node cluster of make cluster, with Apache Kafka on the node (make
// cluster-kafka). Its tests skip unless that cluster is up (.cluster/env, or CLUSTER_ENV,
// ending READY=1) and KAFKACHANNEL_CLUSTER=1 says they were asked for, so make test never runs
// them.
package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
)

// Payload is the data of event seq, which the sender posts and the test recomputes to prove
// that delivery left it unaltered.
func Payload(seq int) string {
	sum := sha256.Sum256([]byte(strconv.Itoa(seq)))
	return fmt.Sprintf(`{"seq":%d,"payload":"%s"}`, seq, hex.EncodeToString(sum[:]))
}
