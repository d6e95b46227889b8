// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

import "contracts/TestPermit2.sol";

/// The x402 upto Permit2 proxy, written from the x402 specification's interface and witness
/// types (and the official x402UptoPermit2ProxyABI): the only spender an upto Permit2 payment
/// names. The payer signs a ceiling (`permit.permitted.amount`); the facilitator named in the
/// witness settles any `amount` up to it, paid to `witness.to`, never earlier than
/// `witness.validAfter`. Nobody else can submit the permit, and nobody can redirect it or take
/// more than the ceiling. `settleWithPermit` (EIP-2612 gas sponsoring) is deliberately left out.
contract X402UptoPermit2Proxy {
    struct Witness {
        address to;
        address facilitator;
        uint256 validAfter;
    }

    TestPermit2 public constant PERMIT2 = TestPermit2(0x000000000022D473030F116dDEE9F6B43aC78BA3);
    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)";
    bytes32 public constant WITNESS_TYPEHASH =
        keccak256("Witness(address to,address facilitator,uint256 validAfter)");

    event Settled();

    error InvalidOwner();
    error InvalidDestination();
    error PaymentTooEarly();
    error UnauthorizedFacilitator();
    error AmountExceedsPermitted();

    function settle(
        TestPermit2.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external {
        if (owner == address(0)) revert InvalidOwner();
        if (witness.to == address(0)) revert InvalidDestination();
        if (block.timestamp < witness.validAfter) revert PaymentTooEarly();
        if (msg.sender != witness.facilitator) revert UnauthorizedFacilitator();
        if (amount > permit.permitted.amount) revert AmountExceedsPermitted();
        PERMIT2.permitWitnessTransferFrom(
            permit,
            TestPermit2.SignatureTransferDetails({to: witness.to, requestedAmount: amount}),
            owner,
            keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.facilitator, witness.validAfter)),
            WITNESS_TYPE_STRING,
            signature
        );
        emit Settled();
    }
}
