package stack

// Spec is one Orderly service as the tooling sees it: the test harness,
// devrun and the deployment tests all read Services, so that adding a
// service to them is one line here (docs/adding-a-service.md).
type Spec struct {
	// Name is the binary (services/<name>/cmd/<name>), the database
	// (orderly_<name>) and the prefix of the queues it owns.
	Name string
	// Port is the default HTTP port, the one its main gives boot.Load.
	Port int
	// Role is what devrun prints next to its URL.
	Role string
}

// Services are every service, in the order they start.
var Services = []Spec{
	{Name: "order", Port: 8080, Role: "order API"},
	{Name: "inventory", Port: 8081, Role: "inventory API"},
	{Name: "payment", Port: 8082, Role: "payment API"},
	{Name: "notification", Port: 8083, Role: "live tracking"},
}

// Names returns the names of Services, in order.
func Names() []string {
	names := make([]string, len(Services))
	for i, s := range Services {
		names[i] = s.Name
	}
	return names
}
