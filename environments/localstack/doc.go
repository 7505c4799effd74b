/*
Package localstack runs the whole system on one machine with no cluster, no Docker and no Kafka
install: a real kube-apiserver and etcd (envtest binaries), an embedded Kafka (kfake), real
Apache Kafka brokers started as local JVMs (Options.Apache, KAFKA=apache; environments/apachekafka)
or the cluster of KAFKA_BOOTSTRAP_SERVERS, the manager as its own process, and a local node that runs
the Deployments the manager writes as local processes. `make demo` and the end-to-end tests
both use it.

# The local node, and how it differs from kubelet

The node runs the Deployments labelled app.kubernetes.io/part-of=kafkachannel in the operator
namespace, one local process per replica, and nothing else. For each replica (a "pod" named
<deployment>-<template hash>-<random>, which is what POD_NAME reads):

  - Command: the container's command[0] /X runs <bin>/X (no command: the image's last path
    element without tag and without a "kafkachannel-" prefix), followed by command[1:] and args,
    $(VAR)-expanded like Kubernetes does. One container per pod; more fail the pod.
  - Env: envFrom, then env in order, resolving secretKeyRef, configMapKeyRef (optional honoured),
    fieldRef (metadata.name, metadata.namespace, metadata.uid, labels/annotations, spec.nodeName,
    spec.serviceAccountName, status.podIP and status.hostIP = 127.0.0.1) and resourceFieldRef.
    Anything unresolvable fails the container start (CreateContainerConfigError), which is
    retried with backoff, as kubelet does. The process gets no other variables of the host
    except PATH and HOME, plus KUBECONFIG (its API access), HOSTNAME and KAFKACHANNEL_PORT_MAP.
  - Volumes: secret, configMap (items, optional honoured) and emptyDir, written under
    <dir>/run/<pod>/volumes/<volume> with kubelet's atomic-writer layout (..data symlink swap),
    re-written whenever the Secret or ConfigMap changes, so files change in place without a
    restart. Other volume types fail the pod.
  - Mounts: a process cannot mount, so each mount is a symlink <dir>/run/<pod>/root/<mountPath>
    to its volume, and paths are rewritten by one rule: an env value or argument (for
    --flag=value arguments the value) that is an absolute path at or below a mountPath, or a
    directory above one (CONFIG_DIR=/etc/config above /etc/config/config-tracing), is prefixed
    with the pod's root directory. Nothing else is rewritten, so a Deployment whose env names
    a path no volume is mounted at breaks locally as it would in a cluster. The working
    directory is the pod's root.
  - Ports: every containerPort gets a free host port; KAFKACHANNEL_PORT_MAP="8081=H1,8080=H2"
    tells the binary (observability.Addr) where to listen.
  - Probes: httpGet and tcpSocket readiness and liveness probes on the mapped ports, thresholds
    as written; readiness is probed at least every second so replicas turn ready quickly.
    Exec and gRPC probes count as passing; startup probes are not run.
  - Restarts: restartPolicy Always with a backoff from 0.5 s doubling to 20 s (reset after 10 s
    of running). SIGTERM to the process group on stop, SIGKILL after the grace period (at most
    10 s). Children die with the node (Pdeathsig) if the stack itself is killed.

Per Deployment it scales, rolls a changed pod template with maxSurge/maxUnavailable (Recreate
too), and writes status: observedGeneration, replicas, updatedReplicas, readyReplicas,
availableReplicas (minReadySeconds honoured), unavailableReplicas and the Available and
Progressing conditions (ProgressDeadlineExceeded after progressDeadlineSeconds). envtest runs
no garbage collector, so the node also releases the foregroundDeletion and orphan finalizers of
a deleted Deployment once its processes stopped.

# Fake pods

Options.FakeComponents (or LOCALSTACK_FAKE_PODS=dispatcher) names app.kubernetes.io/component
values whose replicas the node does not run, as kwok does: such a pod has no process, no ports
and no volumes, and is Ready from the moment it is created. Scaling, rolling and the
Deployment's status are the same as for real replicas, so the manager's DispatcherReady goes
True; what only the process writes (a dispatcher's status.subscribers readiness) stays
unwritten, and events sent to such a channel are never delivered. It exists for control-plane
figures at a scale one machine cannot run as processes (`make bench-scale`).

# Services and files

The receiver Service is a reverse proxy on 127.0.0.1 that spreads requests round-robin over the
ready receiver replicas (container port 8080), keeping the client's Host header.

Files in the stack's directory (.demo for `make demo`): kubeconfig, env (KEY=value, READY=1
last once up), pods (one line per running replica: namespace deployment pod pid metrics-URL
health-URL), logs/manager.log, run/<pod>/container.log, kafka/ (the embedded Kafka's data),
kafka-apache/node-<id>/ (server.properties, data/ and server.log of each Apache Kafka node,
a new cluster every start), localstack.log (the stack's own log, demo only), stack.pid.
*/
package localstack
