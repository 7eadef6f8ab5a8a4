package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAnswersOKWithFixedHeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	srvCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- serve(srvCtx, "127.0.0.1:0", pw); _ = pw.Close() }()
	sc := bufio.NewScanner(pr)
	if !sc.Scan() {
		t.Fatal("no serving line")
	}
	var m map[string]string
	if err := json.Unmarshal(sc.Bytes(), &m); err != nil || m["msg"] != "serving" {
		t.Fatalf("%q %v", sc.Text(), err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	conn, err := grpc.NewClient(m["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	h := r.GetOkResponse().GetHeaders()
	if r.GetStatus().GetCode() != 0 || len(h) != 1 || h[0].GetHeader().GetKey() != "authorization" || h[0].GetAppend().GetValue() {
		t.Fatalf("answer %v", r)
	}
	_ = conn.Close()
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
