// In-pod agent of the kernel test harness: the sandbox's pod program (operator/src/sandbox/podserver.mjs)
// in "agent" mode, which documents the protocol. Runs INSIDE a pod network namespace:
//   ip netns exec <podns> node podagent.mjs '{"name":"x/a","tcp":[80,81],"udp":[80,81]}'
// Listens on those ports, prints {"ready":true,...}, then answers {id,host,port,protocol,timeoutMs}
// lines on stdin with {id,ok,error?,unsupported?,ms} (concurrently); exits on stdin EOF.
import process from 'node:process';

process.argv.splice(2, 0, 'agent');
await import('../../../operator/src/sandbox/podserver.mjs');
