// Package trainer is the contract between gantry and a training program, and
// the reference program that honours it.
//
// The contract: the program prints its accuracy as a line of its output, by
// default in the form "accuracy: 0.95" (or "Model accuracy = 95%"), and the
// last such line is the one that counts. A job may give its own pattern
// instead; see Compile. Reader reads the output as it streams.
//
// The reference program is the scikit-learn Iris trainer that `gantry init`
// writes out with Write: app.py, requirements.txt, a Dockerfile and a
// .dockerignore.
package trainer
