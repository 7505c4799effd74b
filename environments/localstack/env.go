package localstack

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

type envVar struct{ name, value string }

// resolveEnv computes a container's environment the way kubelet does: envFrom first, then env in
// order, each value $(VAR)-expanded against what came before. A reference that cannot be resolved
// (missing Secret, ConfigMap or key that is not optional, an unknown fieldRef) is an error: the
// container does not start.
func (n *Node) resolveEnv(ctx context.Context, p *pod, c *corev1.Container) ([]envVar, error) {
	var out []envVar
	idx := map[string]int{}
	set := func(k, v string) {
		if i, ok := idx[k]; ok {
			out[i].value = v
			return
		}
		idx[k] = len(out)
		out = append(out, envVar{k, v})
	}
	lookup := func(k string) (string, bool) {
		if i, ok := idx[k]; ok {
			return out[i].value, true
		}
		return "", false
	}
	for _, ef := range c.EnvFrom {
		var data map[string]string
		switch {
		case ef.SecretRef != nil:
			s, err := n.getSecret(ctx, p.namespace, ef.SecretRef.Name)
			if err != nil {
				if isOptional(ef.SecretRef.Optional) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("envFrom secret %q: %w", ef.SecretRef.Name, err)
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		case ef.ConfigMapRef != nil:
			cm, err := n.getConfigMap(ctx, p.namespace, ef.ConfigMapRef.Name)
			if err != nil {
				if isOptional(ef.ConfigMapRef.Optional) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("envFrom configmap %q: %w", ef.ConfigMapRef.Name, err)
			}
			data = cm.Data
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(ef.Prefix+k, data[k])
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expandVars(e.Value, lookup))
			continue
		}
		v, skip, err := n.resolveValueFrom(ctx, p, c, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if !skip {
			set(e.Name, v)
		}
	}
	return out, nil
}

func isOptional(b *bool) bool { return b != nil && *b }

func (n *Node) resolveValueFrom(ctx context.Context, p *pod, c *corev1.Container, vf *corev1.EnvVarSource) (string, bool, error) {
	switch {
	case vf.SecretKeyRef != nil:
		r := vf.SecretKeyRef
		s, err := n.getSecret(ctx, p.namespace, r.Name)
		if err != nil {
			if isOptional(r.Optional) && apierrors.IsNotFound(err) {
				return "", true, nil
			}
			return "", false, fmt.Errorf("secret %q: %w", r.Name, err)
		}
		v, ok := s.Data[r.Key]
		if !ok {
			if isOptional(r.Optional) {
				return "", true, nil
			}
			return "", false, fmt.Errorf("couldn't find key %s in Secret %s/%s", r.Key, p.namespace, r.Name)
		}
		return string(v), false, nil
	case vf.ConfigMapKeyRef != nil:
		r := vf.ConfigMapKeyRef
		cm, err := n.getConfigMap(ctx, p.namespace, r.Name)
		if err != nil {
			if isOptional(r.Optional) && apierrors.IsNotFound(err) {
				return "", true, nil
			}
			return "", false, fmt.Errorf("configmap %q: %w", r.Name, err)
		}
		v, ok := cm.Data[r.Key]
		if !ok {
			if isOptional(r.Optional) {
				return "", true, nil
			}
			return "", false, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", r.Key, p.namespace, r.Name)
		}
		return v, false, nil
	case vf.FieldRef != nil:
		v, err := p.fieldValue(vf.FieldRef.FieldPath)
		return v, false, err
	case vf.ResourceFieldRef != nil:
		v, err := resourceValue(c, vf.ResourceFieldRef)
		return v, false, err
	}
	return "", false, fmt.Errorf("valueFrom names no source")
}

// fieldValue answers the downward API's fieldRef paths for a local pod.
func (p *pod) fieldValue(path string) (string, error) {
	meta := p.template.ObjectMeta
	switch path {
	case "metadata.name":
		return p.name, nil
	case "metadata.namespace":
		return p.namespace, nil
	case "metadata.uid":
		return p.uid, nil
	case "spec.nodeName":
		return NodeName, nil
	case "spec.serviceAccountName":
		if p.template.Spec.ServiceAccountName == "" {
			return "default", nil
		}
		return p.template.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs":
		return "127.0.0.1", nil
	}
	for _, pre := range []struct {
		prefix string
		m      map[string]string
	}{{"metadata.labels['", meta.Labels}, {"metadata.annotations['", meta.Annotations}} {
		if strings.HasPrefix(path, pre.prefix) && strings.HasSuffix(path, "']") {
			return pre.m[strings.TrimSuffix(strings.TrimPrefix(path, pre.prefix), "']")], nil
		}
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// resourceValue answers resourceFieldRef; without a limit, the node's capacity is the answer,
// as in Kubernetes.
func resourceValue(c *corev1.Container, r *corev1.ResourceFieldSelector) (string, error) {
	var q resource.Quantity
	var ok bool
	switch r.Resource {
	case "limits.cpu":
		q, ok = c.Resources.Limits[corev1.ResourceCPU]
		if !ok {
			q = *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI)
		}
	case "limits.memory":
		q, ok = c.Resources.Limits[corev1.ResourceMemory]
		if !ok {
			q = resource.MustParse("8Gi")
		}
	case "requests.cpu":
		q = c.Resources.Requests[corev1.ResourceCPU]
	case "requests.memory":
		q = c.Resources.Requests[corev1.ResourceMemory]
	default:
		return "", fmt.Errorf("unsupported resourceFieldRef %q", r.Resource)
	}
	div := r.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	v := (q.MilliValue() + div.MilliValue() - 1) / div.MilliValue()
	return quantityInt(v), nil
}

// commandLine maps the container's command to a binary of the bin directory: command[0] `/X`
// (or an image entrypoint named X) runs `<bin>/X`, with the rest of command and args after it.
func (n *Node) commandLine(c *corev1.Container, env []envVar) ([]string, error) {
	lookup := func(k string) (string, bool) {
		for _, e := range env {
			if e.name == k {
				return e.value, true
			}
		}
		return "", false
	}
	cmd := append([]string{}, c.Command...)
	if len(cmd) == 0 {
		// No command: the image's entrypoint; the local node knows images only by their last
		// path element without tag, e.g. ghcr.io/x/kafkachannel-dispatcher:v1 -> dispatcher.
		img := c.Image[strings.LastIndex(c.Image, "/")+1:]
		img, _, _ = strings.Cut(img, ":")
		img, _, _ = strings.Cut(img, "@")
		cmd = []string{"/" + strings.TrimPrefix(img, "kafkachannel-")}
	}
	bin := filepath.Join(n.BinDir, filepath.Base(cmd[0]))
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		return nil, fmt.Errorf("ErrImagePull: the local node runs command %q as %s, which does not exist (run `make build`)", cmd[0], bin)
	}
	argv := []string{bin}
	for _, a := range append(cmd[1:], c.Args...) {
		argv = append(argv, expandVars(a, lookup))
	}
	return argv, nil
}

// materialiseVolumes writes the pod's Secret, ConfigMap and emptyDir volumes under its directory
// and links each mount at root/<mountPath>. It returns the root.
func (n *Node) materialiseVolumes(ctx context.Context, p *pod) (string, error) {
	root := filepath.Join(p.dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("creating the pod root: %w", err)
	}
	if err := n.refreshVolumes(ctx, p); err != nil {
		return "", err
	}
	c := p.container()
	for _, m := range c.VolumeMounts {
		target := filepath.Join(p.dir, "volumes", m.Name)
		if _, err := os.Stat(target); err != nil {
			return "", fmt.Errorf("volumeMount %q names no volume of the pod", m.Name)
		}
		if m.SubPath != "" {
			target = filepath.Join(target, m.SubPath)
		}
		link := filepath.Join(root, m.MountPath)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return "", fmt.Errorf("creating the mount point of %s: %w", m.MountPath, err)
		}
		_ = os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			return "", fmt.Errorf("mounting volume %q at %s: %w", m.Name, m.MountPath, err)
		}
	}
	return root, nil
}

// refreshVolumes (re)writes every volume of the pod from the API; the node calls it whenever a
// Secret or ConfigMap changes, so mounted files change in place as kubelet would make them.
func (n *Node) refreshVolumes(ctx context.Context, p *pod) error {
	for _, v := range p.template.Spec.Volumes {
		dir := filepath.Join(p.dir, "volumes", v.Name)
		var data map[string][]byte
		var items []corev1.KeyToPath
		var optional bool
		switch {
		case v.Secret != nil:
			optional, items = isOptional(v.Secret.Optional), v.Secret.Items
			s, err := n.getSecret(ctx, p.namespace, v.Secret.SecretName)
			if err != nil && (!optional || !apierrors.IsNotFound(err)) {
				return fmt.Errorf("volume %q: secret %q: %w", v.Name, v.Secret.SecretName, err)
			}
			if s != nil {
				data = s.Data
			}
		case v.ConfigMap != nil:
			optional, items = isOptional(v.ConfigMap.Optional), v.ConfigMap.Items
			cm, err := n.getConfigMap(ctx, p.namespace, v.ConfigMap.Name)
			if err != nil && (!optional || !apierrors.IsNotFound(err)) {
				return fmt.Errorf("volume %q: configmap %q: %w", v.Name, v.ConfigMap.Name, err)
			}
			if cm != nil {
				data = map[string][]byte{}
				for k, s := range cm.Data {
					data[k] = []byte(s)
				}
				for k, b := range cm.BinaryData {
					data[k] = b
				}
			}
		case v.EmptyDir != nil:
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("volume %q: %w", v.Name, err)
			}
			continue
		default:
			return fmt.Errorf("volume %q: only secret, configMap and emptyDir volumes run on the local node", v.Name)
		}
		files := map[string][]byte{}
		if len(items) == 0 {
			for k, b := range data {
				files[k] = b
			}
		} else {
			for _, it := range items {
				b, ok := data[it.Key]
				if !ok {
					if optional {
						continue
					}
					return fmt.Errorf("volume %q: key %q not found", v.Name, it.Key)
				}
				files[it.Path] = b
			}
		}
		if err := writeAtomic(dir, files); err != nil {
			return fmt.Errorf("volume %q: %w", v.Name, err)
		}
	}
	return nil
}

// writeAtomic lays files out like kubelet's atomic writer: the data in a timestamped directory,
// `..data` a symlink to it, each key a symlink through `..data`. Swapping `..data` changes every
// file at once, so a reader never sees half an update. Nothing is written when nothing changed.
func writeAtomic(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dataLink := filepath.Join(dir, "..data")
	if cur, err := os.Readlink(dataLink); err == nil && sameFiles(filepath.Join(dir, cur), files) {
		return nil
	}
	ts, err := os.MkdirTemp(dir, ".."+time.Now().UTC().Format("2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	for k, b := range files {
		p := filepath.Join(ts, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	old, _ := os.Readlink(dataLink)
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dataLink); err != nil {
		return err
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		if _, ok := files[e.Name()]; !ok {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	for k := range files {
		top := strings.Split(k, "/")[0]
		link := filepath.Join(dir, top)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", top), link); err != nil {
			return err
		}
	}
	if old != "" && old != filepath.Base(ts) {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

func sameFiles(dir string, files map[string][]byte) bool {
	n := 0
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		n++
		rel, _ := filepath.Rel(dir, path)
		b, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(b, files[rel]) {
			return fmt.Errorf("differs")
		}
		return nil
	})
	return err == nil && n == len(files)
}

func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
