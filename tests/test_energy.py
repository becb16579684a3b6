"""Closed-form updates equal torch.autograd gradients of the energies (docs/method.md)."""
import math

import pytest
import torch

from ebca_viz import energy as E


def _qkw(B=2, H=4, P=16, N=7, d=8, D=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, P, d, generator=g, dtype=torch.float64)
    c = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    w_k = torch.randn(H * d, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    return q, c, w_k, 1 / math.sqrt(d)


def _keys(c, w_k, H):
    return E.split_heads(c @ w_k.T, H)


def test_attention_term_is_scaled_context_energy_gradient():
    q, c, w_k, beta = _qkw()
    H = q.shape[1]
    k = _keys(c, w_k, H).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(E.context_energy(q, k, beta).sum(), k)
    a = E.attention_term(E.attention_scores(q, k.detach(), beta), q)
    torch.testing.assert_close(a, -(H / beta) * E.merge_heads(grad))


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_context_energy_alpha_term(alpha):
    q, c, w_k, beta = _qkw(seed=3)
    k = _keys(c, w_k, q.shape[1]).requires_grad_(True)
    (g0,) = torch.autograd.grad(E.context_energy(q, k, beta, alpha).sum(), k)
    (g1,) = torch.autograd.grad(E.context_energy(q, k, beta, 0.0).sum(), k)
    # alpha/2 sum |k|^2, averaged over heads -> alpha * k / H
    torch.testing.assert_close(g0 - g1, alpha * k.detach() / q.shape[1])


def test_norm_term_paper_is_prior_gradient():
    _, c, w_k, _ = _qkw()
    k_cat = (c @ w_k.T).requires_grad_(True)
    (grad,) = torch.autograd.grad(E.prior_energy(k_cat).sum(), k_cat)
    torch.testing.assert_close(E.norm_term(k_cat.detach(), "paper"), grad)


def test_norm_term_published_is_half_gradient_of_lse_squared_norm():
    _, c, w_k, _ = _qkw(seed=1)
    k_cat = (c @ w_k.T).requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.logsumexp(k_cat.pow(2).sum(-1), -1).sum(), k_cat)
    torch.testing.assert_close(E.norm_term(k_cat.detach(), "published"), 0.5 * grad)
    assert not torch.allclose(E.norm_term(k_cat.detach(), "published"), E.norm_term(k_cat.detach(), "paper"))


def test_context_update_is_chain_rule_gradient_step_in_context_space():
    """dC = -(gamma_attn H/beta dE(K;Q)/dC + gamma_norm dE(K)/dC) with K = C W_k^T (paper prior)."""
    q, c, w_k, beta = _qkw(seed=2)
    H = q.shape[1]
    ga, gn = 0.013, 0.021
    c = c.requires_grad_(True)
    k = _keys(c, w_k, H)
    energy = ga * (H / beta) * E.context_energy(q, k, beta) + gn * E.prior_energy(E.merge_heads(k))
    (grad_c,) = torch.autograd.grad(energy.sum(), c)
    kd = k.detach()
    dc = E.context_update(E.attention_scores(q, kd, beta), q, kd, w_k, ga, gn, prior_form="paper")
    torch.testing.assert_close(dc, -grad_c)


def test_posterior_energy_decreases_for_a_small_step():
    q, c, w_k, beta = _qkw(seed=4)
    H = q.shape[1]
    eta = 1e-3
    k = _keys(c, w_k, H)
    before = E.posterior_energy(q, k, beta)
    # a gradient step on E(K;Q) + E(K): gamma_attn = eta*beta/H, gamma_norm = eta
    dc = E.context_update(E.attention_scores(q, k, beta), q, k, w_k, eta * beta / H, eta, prior_form="paper")
    after = E.posterior_energy(q, _keys(c + dc, w_k, H), beta)
    assert (after < before).all(), (before, after)
    # and the decrease matches the first-order prediction -eta |grad|^2
    cg = c.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(E.posterior_energy(q, _keys(cg, w_k, H), beta).sum(), cg)
    pred = -(eta * g.pow(2)).sum(dim=(1, 2))
    # dc is the step in C space with both terms at step eta (chain rule), so first order matches
    torch.testing.assert_close(after - before, pred, rtol=5e-2, atol=1e-9)


def test_query_energy_step_is_cross_attention_with_tied_values():
    """-dE(Q;K)/dq_i = beta sum_j softmax_j(S_ij) k_j: attention output with V = K."""
    q, c, w_k, beta = _qkw(seed=5)
    H = q.shape[1]
    k = _keys(c, w_k, H)
    qg = q.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(E.query_energy(qg, k, beta).sum(), qg)
    attn = torch.softmax(E.attention_scores(q, k, beta), -1) @ k
    torch.testing.assert_close(-g * H / beta, attn)


def test_token_weight_scales_only_the_attention_term():
    q, c, w_k, beta = _qkw(seed=6)
    k = _keys(c, w_k, q.shape[1])
    s = E.attention_scores(q, k, beta)
    w = torch.ones(q.shape[0], k.shape[2], 1, dtype=torch.float64)
    w[1, 3] = 2.5
    base_a = E.context_update(s, q, k, w_k, 0.1, 0.0)
    up_a = E.context_update(s, q, k, w_k, 0.1, 0.0, token_weight=w)
    torch.testing.assert_close(up_a[1, 3], 2.5 * base_a[1, 3])
    torch.testing.assert_close(up_a[0], base_a[0])
    n0 = E.context_update(s, q, k, w_k, 0.0, 0.2)
    torch.testing.assert_close(E.context_update(s, q, k, w_k, 0.0, 0.2, token_weight=w), n0)
    assert torch.count_nonzero(E.context_update(s, q, k, w_k, 0.0, 0.0)) == 0
