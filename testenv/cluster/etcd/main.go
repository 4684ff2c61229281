// Command etcd is the etcd server, built from the pinned go.etcd.io/etcd/server/v3
// module for the integration-test control plane (scripts/build-cluster.sh).
// It is what etcd's own main.go does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
