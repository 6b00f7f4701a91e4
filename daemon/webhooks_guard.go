package daemon

// What a job's webhook may reach. Its request leaves from gantryd, on the
// host's network, so a job could otherwise have gantryd post to a service
// that listens only there: the URLs are checked at submit, and every
// connection (a redirect's too) is checked again as it is dialed, against
// the address it dials, so a name that resolves elsewhere later gains
// nothing.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"

	"github.com/gantry-ml/gantry"
)

// checkHookAddr says why a job's webhook may not reach a, or nil.
func checkHookAddr(a netip.Addr, allowPrivate bool) error {
	a = a.Unmap()
	switch {
	case a.IsUnspecified(), a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast(), a.IsMulticast():
		return fmt.Errorf("%s is a link-local, multicast or unspecified address: a job's webhook may not reach it", a)
	case (a.IsLoopback() || a.IsPrivate()) && !allowPrivate:
		return fmt.Errorf("%s is a loopback or private address: a job's webhook may reach it only when gantryd is started with --webhook-allow-private", a)
	}
	return nil
}

// errRedirects stops a chain of redirects.
var errRedirects = errors.New("stopped after 3 redirects")

// guardedClient is the client of jobs' webhooks: it dials only addresses
// checkHookAddr allows, through no proxy, and follows up to 3 redirects
// (each dial checked).
func guardedClient(allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("dial %s: %w", address, err)
		}
		return checkHookAddr(ap.Addr(), allowPrivate)
	}}
	return &http.Client{
		Transport: &http.Transport{DialContext: dialer.DialContext, MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second},
		CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errRedirects
			}
			return nil
		},
	}
}

// operatorClient is the client of gantryd's own --webhook URLs, which the
// operator chose: it goes through the environment's proxy, and follows no
// redirect (a 3xx is a failed attempt).
func operatorClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// checkWebhookURL checks one webhook URL's form: http or https, a host, no
// fragment. It returns ErrInvalid.
func checkWebhookURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "webhook %q: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.Fragment != "" {
		return nil, gantry.Errorf(gantry.ErrInvalid, "webhook %q: want an http or https URL with a host, like https://hooks.example/gantry", raw)
	}
	return u, nil
}

// checkWebhooks checks the URLs spec names against the policy: gantryd
// signs its messages (it has a --webhook-secret-file), a few URLs, each
// reaching an address checkHookAddr allows as its name resolves now. It
// returns ErrInvalid or ErrForbidden.
func (d *Daemon) checkWebhooks(ctx context.Context, spec *gantry.Spec) error {
	if len(spec.Webhooks) == 0 {
		return nil
	}
	if len(d.hooks.cfg.Key) == 0 {
		return gantry.Errorf(gantry.ErrForbidden, "webhooks: gantryd sends none (it was started without --webhook-secret-file)")
	}
	if len(spec.Webhooks) > maxWebhooks {
		return gantry.Errorf(gantry.ErrInvalid, "webhooks: %d URLs, at most %d", len(spec.Webhooks), maxWebhooks)
	}
	for _, raw := range spec.Webhooks {
		u, err := checkWebhookURL(raw)
		if err != nil {
			return err
		}
		host := u.Hostname()
		addrs := []netip.Addr{}
		if a, err := netip.ParseAddr(host); err == nil {
			addrs = append(addrs, a)
		} else {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			addrs, err = d.fetch.resolve(rctx, "ip", host)
			cancel()
			if err != nil {
				return gantry.Errorf(gantry.ErrInvalid, "webhook %s: cannot resolve %s: %v", raw, host, err)
			}
		}
		for _, a := range addrs {
			if err := checkHookAddr(a, d.hooks.allowPrivate); err != nil {
				return gantry.Errorf(gantry.ErrForbidden, "webhook %s: %v", raw, err)
			}
		}
	}
	return nil
}
