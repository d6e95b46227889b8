// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

import "contracts/TestPermit2.sol";

/// The x402 exact Permit2 proxy, written from the x402 specification's interface and witness
/// types: the only spender an exact Permit2 payment names. It pays `witness.to` exactly the
/// permitted amount, never earlier than `witness.validAfter`, so whoever submits the permit
/// (a facilitator, Tariff's relayer, a front-runner) cannot redirect or resize it.
contract X402ExactPermit2Proxy {
    struct Witness {
        address to;
        uint256 validAfter;
    }

    TestPermit2 public constant PERMIT2 = TestPermit2(0x000000000022D473030F116dDEE9F6B43aC78BA3);
    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)";
    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,uint256 validAfter)");

    event Settled();

    error InvalidOwner();
    error InvalidDestination();
    error PaymentTooEarly();

    function settle(
        TestPermit2.PermitTransferFrom calldata permit,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external {
        if (owner == address(0)) revert InvalidOwner();
        if (witness.to == address(0)) revert InvalidDestination();
        if (block.timestamp < witness.validAfter) revert PaymentTooEarly();
        PERMIT2.permitWitnessTransferFrom(
            permit,
            TestPermit2.SignatureTransferDetails({to: witness.to, requestedAmount: permit.permitted.amount}),
            owner,
            keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.validAfter)),
            WITNESS_TYPE_STRING,
            signature
        );
        emit Settled();
    }
}
