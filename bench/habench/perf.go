package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// profileReplicas samples the weft replicas' CPU with Linux perf
// (-replica-cpu-profile) during the writes: weft server serves no Go
// profiles, and perf needs no change to the binary measured (Go keeps
// frame pointers, so the call graphs are whole). The function returned
// stops the samplers and waits for their files: perf.data files named
// after the setup and the replica, read with `perf report -i FILE`.
func (b *bench) profileReplicas() func() {
	if b.replicaProfile == "" {
		return func() {}
	}
	var cmds []*exec.Cmd
	for i, r := range b.procs {
		name := filepath.Join(b.replicaProfile, fmt.Sprintf("weft-%s-r%d.perf.data", b.label(), i))
		cmd := exec.Command("perf", "record", "-q", "-F", "499", "-g", "-p", strconv.Itoa(r.Pid()), "-o", name)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "habench: perf for replica %d: %v\n", i, err)
			continue
		}
		cmds = append(cmds, cmd)
	}
	return func() {
		for _, cmd := range cmds {
			cmd.Process.Signal(syscall.SIGINT)
		}
		for _, cmd := range cmds {
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }() // ends when perf has written its file and exited
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		}
		fmt.Printf("perf CPU profiles of the replicas during the writes: %s\n", b.replicaProfile)
	}
}
