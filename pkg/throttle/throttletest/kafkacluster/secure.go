package kafkacluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Security starts a cluster as production ones run: clients reach it only on a
// SASL_SSL listener (TLS with certificates the harness makes, SASL/SCRAM-SHA-512), and
// the standard authorizer refuses whatever no ACL allows. The controller and
// inter-broker listeners stay PLAINTEXT on loopback; their principal, User:ANONYMOUS,
// is a super user, and so is the harness, which talks to the nodes through them.
type Security struct {
	// Users are the SCRAM-SHA-512 users, name to password, created when the storage is
	// formatted (kafka-storage format --add-scram).
	Users map[string]string
	// SuperUsers are names of Users that every ACL check lets through (an operator).
	SuperUsers []string
}

// Mechanism is the SASL mechanism of a secured cluster's client listener.
const Mechanism = "SCRAM-SHA-512"

// serverTLS is what a secured cluster's nodes and clients need: a CA and one server
// certificate for 127.0.0.1 and localhost, signed by it, shared by every node.
type serverTLS struct {
	caPEM    []byte
	keystore string // PEM file: the server's PKCS#8 key, then its certificate and the CA's
}

// makeServerTLS makes a CA and a server certificate in dir. The keys are ECDSA P-256:
// quick to make, and read by Kafka's PEM keystore (PKCS#8, unencrypted).
func makeServerTLS(dir string) (*serverTLS, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tls dir: %w", err)
	}
	caKey, caCert, caDER, err := newCA("sluice test CA")
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("server key: %w", err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	var ks []byte
	ks = append(ks, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})...)
	ks = append(ks, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	ks = append(ks, caPEM...)
	keystore := filepath.Join(dir, "server.pem")
	if err := os.WriteFile(keystore, ks, 0o600); err != nil {
		return nil, fmt.Errorf("write keystore: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), caPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write ca: %w", err)
	}
	return &serverTLS{caPEM: caPEM, keystore: keystore}, nil
}

func newCA(name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca certificate: %w", err)
	}
	return key, cert, der, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

// UntrustedCAPEM returns the certificate of a fresh CA that signed nothing of this
// cluster's, for tests of a client that trusts the wrong CA.
func UntrustedCAPEM() ([]byte, error) {
	_, _, der, err := newCA("sluice untrusted CA")
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// secureProps are the settings of node n that secure it.
func (c *Cluster) secureProps(n *node) map[string]string {
	supers := []string{"User:ANONYMOUS"} // the PLAINTEXT controller and inter-broker listeners
	for _, u := range c.cfg.Security.SuperUsers {
		supers = append(supers, "User:"+u)
	}
	return map[string]string{
		"listeners": fmt.Sprintf("SASL_SSL://127.0.0.1:%d,INTERNAL://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d",
			n.brokerPort, n.internalPort, n.controllerPort),
		"advertised.listeners": fmt.Sprintf("SASL_SSL://127.0.0.1:%d,INTERNAL://127.0.0.1:%d",
			n.brokerPort, n.internalPort),
		"listener.security.protocol.map":                        "SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"inter.broker.listener.name":                            "INTERNAL",
		"sasl.enabled.mechanisms":                               Mechanism,
		"listener.name.sasl_ssl.sasl.enabled.mechanisms":        Mechanism,
		"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
		"listener.name.sasl_ssl.ssl.keystore.type":              "PEM",
		"listener.name.sasl_ssl.ssl.keystore.location":          c.tls.keystore,
		"listener.name.sasl_ssl.ssl.client.auth":                "none",
		"authorizer.class.name":                                 "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
		"super.users":                                           strings.Join(supers, ";"),
		"allow.everyone.if.no.acl.found":                        "false",
	}
}

// scramArgs are the storage tool's arguments that create the SCRAM users.
func (c *Cluster) scramArgs() []string {
	if c.cfg.Security == nil {
		return nil
	}
	var args []string
	for _, name := range slices.Sorted(maps.Keys(c.cfg.Security.Users)) {
		args = append(args, "--add-scram", fmt.Sprintf("%s=[name=%s,password=%s]", Mechanism, name, c.cfg.Security.Users[name]))
	}
	return args
}

// redact replaces every user's password in s.
func (c *Cluster) redact(s string) string {
	if c.cfg.Security == nil {
		return s
	}
	for _, pw := range c.cfg.Security.Users {
		if pw != "" {
			s = strings.ReplaceAll(s, pw, "[redacted]")
		}
	}
	return s
}

// CAPEM returns the certificate of the CA that signed a secured cluster's server
// certificate (nil when the cluster is plain).
func (c *Cluster) CAPEM() []byte {
	if c.tls == nil {
		return nil
	}
	return slices.Clone(c.tls.caPEM)
}

// CAFile is the path of the CA certificate in PEM ("" when the cluster is plain), for
// programs configured by KAFKA_TLS_CA_FILE.
func (c *Cluster) CAFile() string {
	if c.tls == nil {
		return ""
	}
	return filepath.Join(filepath.Dir(c.tls.keystore), "ca.pem")
}

// TLSConfig returns a client TLS configuration that trusts the cluster's CA (nil when
// the cluster is plain).
func (c *Cluster) TLSConfig() *tls.Config {
	if c.tls == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.tls.caPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// ACL is one binding: it allows (or with Deny, denies) Principal one Operation on a
// resource. The names are Kafka's, case and separators aside: resource types topic,
// group, cluster, transactional_id; operations READ, WRITE, CREATE, DELETE, ALTER,
// DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, ALL.
type ACL struct {
	Principal string // "User:name"
	Resource  string
	Name      string // kafka-cluster for the cluster
	Prefixed  bool   // Name is a prefix, not a literal
	Operation string
	Deny      bool
}

func (a ACL) String() string {
	verb, pattern := "allow", "literal"
	if a.Deny {
		verb = "deny"
	}
	if a.Prefixed {
		pattern = "prefixed"
	}
	return fmt.Sprintf("%s %s %s on %s %s (%s)", verb, a.Principal, a.Operation, a.Resource, a.Name, pattern)
}

// CreateACLs creates the bindings on a secured cluster, as a super user.
func (c *Cluster) CreateACLs(ctx context.Context, acls ...ACL) error {
	if c.cfg.Security == nil {
		return errors.New("create acls: the cluster is not secured")
	}
	req := kmsg.NewPtrCreateACLsRequest()
	for _, a := range acls {
		cr := kmsg.NewCreateACLsRequestCreation()
		var err error
		if cr.ResourceType, err = kmsg.ParseACLResourceType(a.Resource); err != nil {
			return fmt.Errorf("acl %s: %w", a, err)
		}
		if cr.Operation, err = kmsg.ParseACLOperation(a.Operation); err != nil {
			return fmt.Errorf("acl %s: %w", a, err)
		}
		cr.ResourceName, cr.Principal, cr.Host = a.Name, a.Principal, "*"
		cr.ResourcePatternType = kmsg.ACLResourcePatternTypeLiteral
		if a.Prefixed {
			cr.ResourcePatternType = kmsg.ACLResourcePatternTypePrefixed
		}
		cr.PermissionType = kmsg.ACLPermissionTypeAllow
		if a.Deny {
			cr.PermissionType = kmsg.ACLPermissionTypeDeny
		}
		req.Creations = append(req.Creations, cr)
	}
	before, err := describeACLCount(ctx, c.runningNodes()[0].adminAddr())
	if err != nil {
		return err
	}
	cl, err := client(c.adminBrokers()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("create acls: %w", err)
	}
	for i, r := range resp.Results {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			return fmt.Errorf("create acl %s: %w: %s", acls[i], err, deref(r.ErrorMessage))
		}
	}
	// Each node's authorizer applies the new bindings from the metadata log, a moment
	// after the controller: wait until every node lists them.
	// (Creating a binding that exists already would make this wait time out.)
	return c.waitACLs(ctx, before+len(acls))
}

// waitACLs waits until every running node describes at least n bindings.
func (c *Cluster) waitACLs(ctx context.Context, n int) error {
	for {
		var short error
		for _, nd := range c.runningNodes() {
			got, err := describeACLCount(ctx, nd.adminAddr())
			if err != nil {
				return err
			}
			if got < n {
				short = fmt.Errorf("node %d lists %d acls, want %d", nd.id, got, n)
				break
			}
		}
		if short == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for acls: %w (last: %w)", ctx.Err(), short)
		case <-time.After(poll):
		}
	}
}

func describeACLCount(ctx context.Context, addr string) (int, error) {
	cl, err := client(addr)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	req := kmsg.NewPtrDescribeACLsRequest()
	req.ResourceType = kmsg.ACLResourceTypeAny
	req.ResourcePatternType = kmsg.ACLResourcePatternTypeAny
	req.Operation = kmsg.ACLOperationAny
	req.PermissionType = kmsg.ACLPermissionTypeAny
	resp, err := cl.SeedBrokers()[0].Request(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("describe acls: %w", err)
	}
	r := resp.(*kmsg.DescribeACLsResponse)
	if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
		return 0, fmt.Errorf("describe acls: %w", err)
	}
	n := 0
	for _, res := range r.Resources {
		n += len(res.ACLs)
	}
	return n, nil
}

// deleteACLs deletes every binding, for Reset.
func deleteACLs(ctx context.Context, cl interface {
	Request(context.Context, kmsg.Request) (kmsg.Response, error)
}) error {
	req := kmsg.NewPtrDeleteACLsRequest()
	f := kmsg.NewDeleteACLsRequestFilter()
	f.ResourceType = kmsg.ACLResourceTypeAny
	f.ResourcePatternType = kmsg.ACLResourcePatternTypeAny
	f.Operation = kmsg.ACLOperationAny
	f.PermissionType = kmsg.ACLPermissionTypeAny
	req.Filters = []kmsg.DeleteACLsRequestFilter{f}
	resp, err := cl.Request(ctx, req)
	if err != nil {
		return fmt.Errorf("delete acls: %w", err)
	}
	for _, r := range resp.(*kmsg.DeleteACLsResponse).Results {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			return fmt.Errorf("delete acls: %w", err)
		}
	}
	return nil
}
