# Certificates of the cluster (sourced by up.sh): one CA signs every serving and client
# certificate, with the names Kubernetes' Node and RBAC authorizers expect. EC P-256 keys are
# generated in milliseconds, so a cluster gets fresh ones whenever the node's address changes.

# cert NAME CN ORG USAGE [SAN...] writes NAME.crt and NAME.key signed by the CA in the cwd.
cert() {
  local name=$1 cn=$2 org=$3 usage=$4; shift 4
  local subj="/CN=$cn"; [[ -n $org ]] && subj+="/O=$org"
  openssl ecparam -genkey -name prime256v1 -noout -out "$name.key" 2>/dev/null
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    if (($# > 0)); then local IFS=,; echo "subjectAltName=$*"; fi
  } > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

# make_pki IP writes the whole set into $STATE/pki.
make_pki() {
  local ip=$1 dir=$STATE/pki
  if [[ -f $dir/ip && $(cat "$dir/ip") == "$ip" && -f $dir/admin.crt ]]; then return 0; fi
  rm -rf "$dir"; mkdir -p "$dir"
  (
    cd "$dir" || exit 1
    umask 077
    openssl ecparam -genkey -name prime256v1 -noout -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -subj /CN=kafkachannel-cluster-ca -days 3650 \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature \
      -out ca.crt 2>/dev/null
    cert apiserver kube-apiserver "" serverAuth "IP:$ip" IP:127.0.0.1 "IP:$KUBERNETES_SVC_IP" DNS:localhost \
      DNS:kubernetes DNS:kubernetes.default DNS:kubernetes.default.svc DNS:kubernetes.default.svc.cluster.local
    cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
    cert admin kubernetes-admin system:masters clientAuth
    cert controller-manager system:kube-controller-manager "" clientAuth
    cert scheduler system:kube-scheduler "" clientAuth
    cert kube-proxy system:kube-proxy "" clientAuth
    cert kubelet-client "system:node:$NODE_NAME" system:nodes clientAuth
    cert kubelet "system:node:$NODE_NAME" system:nodes serverAuth "IP:$ip" "DNS:$NODE_NAME"
    openssl ecparam -genkey -name prime256v1 -noout -out sa.key 2>/dev/null
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
    echo "$ip" > ip
  )
}

# kubeconfig NAME CERT writes $STATE/NAME.kubeconfig that authenticates with pki/CERT.{crt,key}.
kubeconfig() {
  local out=$STATE/$1 cert=$STATE/pki/$2
  cat > "$out" <<KC
apiVersion: v1
kind: Config
clusters:
- name: kafkachannel-cluster
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $cert.crt
    client-key: $cert.key
contexts:
- name: kafkachannel-cluster
  context: {cluster: kafkachannel-cluster, user: $2}
current-context: kafkachannel-cluster
KC
  chmod 600 "$out"
}
