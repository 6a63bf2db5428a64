package boot

import (
	"os"
	"strings"
)

// secretVariables are the settings that hold credentials. Each may instead be
// read from a file named by the same variable with _FILE appended
// (AUTH_JWT_SECRET_FILE), the convention of Docker and Kubernetes secrets
// mounted as files, so that the secret itself is not in the process's
// environment, where /proc/<pid>/environ, crash reports and `docker inspect`
// show it.
var secretVariables = []string{
	"AUTH_JWT_SECRET",
	"AUTH_JWT_SECRET_PREVIOUS",
	"TRACKING_SECRET",
	"TRACKING_SECRET_PREVIOUS",
	"DATABASE_URL",
	"AMQP_URL",
}

// readSecretFiles replaces each secret's <NAME>_FILE in vars with <NAME> set
// to the file's content. Setting both is refused rather than resolved by a
// precedence rule, because a deployment that sets both has one value nobody
// meant to use.
func readSecretFiles(vars map[string]string) error {
	var p Problems
	for _, name := range secretVariables {
		path := vars[name+"_FILE"]
		if path == "" {
			continue
		}
		if vars[name] != "" {
			p.Require(false, name+"_FILE", "set %s or %s_FILE, not both", name, name)
			continue
		}
		b, err := os.ReadFile(path) //nolint:gosec // the operator names the file; reading it is the point
		if err != nil {
			p.Require(false, name+"_FILE", "%v", err)
			continue
		}
		// Files written by editors and `echo` end in a newline that is not
		// part of the secret.
		value := strings.TrimRight(string(b), "\r\n")
		if value == "" {
			p.Require(false, name+"_FILE", "%s is empty", path)
			continue
		}
		vars[name] = value
	}
	return p.Err()
}
