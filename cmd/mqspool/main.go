// Command mqspool forwards files dropped into a spool directory to an MQTT
// broker, durably. Run "mqspool --help" for the commands.
package main

import (
	"os"

	"github.com/mqspool/mqspool/internal/spool"
)

func main() {
	// A spool database left by a crash is checked in a child process that
	// runs this executable; see spool.ServeCheck.
	spool.ServeCheck()
	os.Exit(execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
