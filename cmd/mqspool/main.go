// Command mqspool forwards files dropped into a spool directory to an MQTT
// broker, durably. Run "mqspool --help" for the commands.
package main

import (
	"os"
)

func main() {
	os.Exit(execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
