// Command kube is a multi-call binary holding the Kubernetes components that
// Sightline's local cluster needs, so the large dependency graph links once.
// The component is chosen by the first argument (or by the name it was called
// under, so symlinks such as kube-apiserver -> kube also work).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func command(name string) *cobra.Command {
	switch name {
	case "kube-apiserver":
		return apiserver.NewAPIServerCommand()
	case "kube-controller-manager":
		return controllermanager.NewControllerManagerCommand()
	case "kube-scheduler":
		return scheduler.NewSchedulerCommand()
	case "kube-proxy":
		return proxy.NewProxyCommand()
	case "kubelet":
		return kubelet.NewKubeletCommand(context.Background())
	case "kubectl":
		return kubectl.NewDefaultKubectlCommand()
	}
	return nil
}

func main() {
	args := os.Args
	if cmd := command(filepath.Base(args[0])); cmd != nil {
		os.Exit(cli.Run(cmd))
	}
	if len(args) > 1 {
		if cmd := command(args[1]); cmd != nil {
			cmd.SetArgs(args[2:])
			os.Exit(cli.Run(cmd))
		}
	}
	fmt.Fprintln(os.Stderr, "usage: kube {kube-apiserver|kube-controller-manager|kube-scheduler|kube-proxy|kubelet|kubectl} [flags]")
	os.Exit(2)
}
